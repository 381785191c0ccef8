import Foundation
import ViTCore
import ViTIO

/// The precision a model's weights are kept in (`--dtype`).
///
/// - `bf16`, `f16`: every parameter rounded to half precision (as a half-precision checkpoint holds it) and
///   widened to f32 when the GEMM packs it, so the arithmetic stays f32.
/// - `int8`: dynamic quantisation of the Linear layers (the patch embedding's projection; in each encoder
///   block query, key, value, attention output, fc1, fc2): weights symmetric per output channel in 8 bits
///   (7 on AVX2, whose int16 pairs could saturate; see CKernels' qgemm_body.h), activations per token at run
///   time in 8 bits with a zero point, exact int32 sums, dequantisation, bias, GELU and the residual add in
///   the GEMM's epilogue. LayerNorm, softmax and the residual stream stay f32. Where the kernel takes 8-bit
///   weights (VNNI, portable), the patch embedding runs the same way, each patch's pixels quantised like a
///   token (1/(12·L) of the products, but 2 % of ViT-B's int8 time in f32); at AVX2's 7 bits it stays f32,
///   which keeps more labels. The attention
///   products QKᵀ and PV run in int8 where the CPU has VNNI (K per key, V per channel, Q per token,
///   probabilities as levels of their row's maximum; `QuantizedMatrix.quantizesAttention`), in f32
///   elsewhere. Left in f32, on purpose: the classifier (tiny, and its outputs are the answer).
public enum WeightPrecision: String, CaseIterable, Sendable {
    case f32, bf16, f16, int8
}

/// How an int8 directory records its scheme in `config.json` (`quantization_config`).
public enum Int8Checkpoint {
    public static let method = "vitmsn_int8_dynamic"
    /// The suffix of each quantised weight's per-output-channel scales (F32, shape (out)); the weight itself
    /// is stored as I8 in its usual name and shape ((out, in), the patch embedding's (out, C, P, P)) in
    /// [-127, 127] (or [-63, 63] at 7 bits), with `weight ≈ weight_scale[o] · weight[o][i]`.
    public static let scaleSuffix = "_scale"

    /// `quantization_config`: the scheme, the weights' bits and the layers of each encoder block it covers
    /// (`quantizableLinears`). Loading reads the values themselves, so `weight_bits` is a record, not a switch.
    static func config(weightBits: Int) -> [String: Any] {
        let bound = (1 << (weightBits - 1)) - 1
        return [
            "quant_method": method,
            "weight_bits": weightBits,
            "weights": "symmetric per output channel, \(weightBits)-bit in int8 ([-\(bound), \(bound)]): I8 weight (its float shape) and F32 weight_scale (out)",
            "activations": "unsigned 8-bit with a zero point, per token (per patch), quantised at run time (7-bit on AVX2 against 8-bit weights)",
            "modules": [ViTMSNModel.patchProjectionName] + ViTMSNModel.quantizableLayerNames.map { "encoder.layer.*." + $0 },
        ]
    }
}

extension ViTMSNModel {
    /// The Linear layers of each encoder block int8 quantises by their names in the block.
    static let quantizableLayerNames = ["attention.attention.query", "attention.attention.key", "attention.attention.value",
                                        "attention.output.dense", "intermediate.dense", "output.dense"]

    static let patchProjectionName = "embeddings.patch_embeddings.projection"

    /// The patch embedding's projection and those layers of every block, by their names in the backbone.
    package var quantizableLinears: [(name: String, layer: NN.Linear)] {
        [(Self.patchProjectionName, embeddings.patchEmbeddings.projection)] + encoder.layer.enumerated().flatMap { i, block in
            let layers = [block.attention.attention.query, block.attention.attention.key, block.attention.attention.value,
                          block.attention.output.dense, block.intermediate.dense, block.output.dense]
            return zip(Self.quantizableLayerNames, layers).map { ("encoder.layer.\(i)." + $0, $1) }
        }
    }

    /// Whether the Linear layers hold int8 weights.
    public var isQuantized: Bool { quantizableLinears.contains { $0.layer.quantizedWeight != nil } }

    /// The bits of the int8 weights (8 if any layer spans 8), or nil when none is quantised.
    public var quantizedWeightBits: Int? { quantizableLinears.compactMap { $0.layer.quantizedWeight?.bits }.max() }

    /// Takes the int8 weights a quantised checkpoint stores (I8 `weight`, F32 `weight_scale`) for every
    /// quantisable layer that has them, checking each value; returns the checkpoint names consumed.
    package func loadQuantizedLinears(from source: TensorSource, checkpointName: (String) -> String) throws -> Set<String> {
        var consumed = Set<String>()
        for (name, layer) in quantizableLinears {
            let weightName = checkpointName(name + ".weight"), scaleName = weightName + Int8Checkpoint.scaleSuffix
            guard let info = source.info(weightName), info.dtype == .I8 else { continue }
            guard let scaleInfo = source.info(scaleName) else {
                throw CheckpointError(source.location, "'\(weightName)' is I8 but '\(scaleName)' is missing")
            }
            guard info.shape == layer.weightShape, scaleInfo.shape == [layer.outFeatures] else {
                throw CheckpointError(source.location, "wrongly shaped tensors: \(weightName) \(info.shape), \(scaleName) \(scaleInfo.shape); the model needs \(layer.weightShape) and [\(layer.outFeatures)]")
            }
            let values = try source.int8Values(weightName)
            if values.contains(-128) {
                throw CheckpointError(source.location, "'\(weightName)' holds -128; this scheme's weights are symmetric, in [-127, 127]")
            }
            let scales = try source.floatTensor(scaleName).scalars
            guard scales.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
                throw CheckpointError(source.location, "'\(scaleName)' holds a negative or non-finite scale")
            }
            layer.setQuantizedWeight(QuantizedMatrix(values: values, stride: layer.inFeatures, scales: scales, n: layer.outFeatures, k: layer.inFeatures))
            source.releaseResidentPages(weightName)
            consumed.formUnion([weightName, scaleName])
        }
        return consumed
    }

    /// The int8 weights as checkpoint records (I8 weight and F32 scales), under `prefix`.
    package func quantizedRecords(prefix: String) -> [SafetensorsRecord] {
        quantizableLinears.flatMap { name, layer -> [SafetensorsRecord] in
            guard let matrix = layer.quantizedWeight else { return [] }
            let weightName = prefix + name + ".weight"
            return [
                SafetensorsRecord(name: weightName, int8: matrix.values, shape: layer.weightShape),
                SafetensorsRecord(name: weightName + Int8Checkpoint.scaleSuffix, tensor: Tensor(shape: [matrix.n], scalars: matrix.scales)),
            ]
        }
    }
}

extension NN.Module {
    /// Rounds every parameter to bf16 or f16 (to nearest, ties to even), keeping it in f32 storage.
    func roundParameters(to dtype: DType) {
        visitParameters { _, tensor in
            tensor.withUnsafeMutableBufferPointer { values in
                for i in values.indices {
                    values[i] = dtype == .BF16
                        ? HalfPrecision.float(fromBF16: HalfPrecision.bf16Bits(from: values[i]))
                        : HalfPrecision.float(fromF16: HalfPrecision.f16Bits(from: values[i]))
                }
            }
        }
    }
}

/// Puts `module` (whose encoder is `backbone`) in `precision`; int8 layers stay int8.
private func convert(_ module: NN.Module, backbone: ViTMSNModel, to precision: WeightPrecision) {
    switch precision {
    case .f32: break
    case .bf16: module.roundParameters(to: .BF16)
    case .f16: module.roundParameters(to: .F16)
    case .int8:  // the layers in parallel: quantising, with AVX2's lane fitting, is most of an int8 load's time
        // The patch embedding only where the kernel takes 8-bit weights: at AVX2's 7 bits it changed 0.11 % more
        // of a Fashion-MNIST classifier's labels (99.48 % agreement with f32, against 99.59 % left in f32).
        let layers = backbone.quantizableLinears.filter { name, layer in
            layer.quantizedWeight == nil && (name != ViTMSNModel.patchProjectionName || QuantizedMatrix.preferredBits == 8)
        }.map(\.layer)
        Parallelism().forEachChunk(of: layers.count) { range in for i in range { layers[i].quantize() } }
        // The f32 rest (biases, LayerNorms, embeddings, the classifier: a few MB) moves out of a mapped
        // checkpoint, whose pages it would otherwise keep resident, 64 KB around each small tensor the forward touches.
        module.visitParameters { _, tensor in
            guard tensor.storage.isFileMapped else { return }
            let mapped = tensor.storage
            _ = tensor.uniqueBaseAddress()  // copies borrowed storage
            mapped.releaseResidentPages()
        }
    }
}

extension ViTMSNModel {
    /// Puts the model in `precision` (see `WeightPrecision`).
    public func convert(to precision: WeightPrecision) { ViTModel.convert(self, backbone: self, to: precision) }
}

extension ViTMSNForImageClassification {
    /// Puts the model in `precision` (see `WeightPrecision`; the classifier stays f32 at int8).
    public func convert(to precision: WeightPrecision) { ViTModel.convert(self, backbone: vit, to: precision) }
}

extension AnyViTMSN {
    public func convert(to precision: WeightPrecision) {
        switch self {
        case .model(let model): model.convert(to: precision)
        case .imageClassification(let model): model.convert(to: precision)
        }
    }
}
