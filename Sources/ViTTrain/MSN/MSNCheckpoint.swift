import Foundation
import ViTCore
import ViTIO
import ViTModel

/// An original MSN training checkpoint (facebookresearch/msn: `torch.save` of `encoder`, `target_encoder`,
/// `prototypes`, `opt`, `epoch`, …, encoder keys under DDP's `module.`). The target encoder is served in
/// Transformers' names exactly as `convert_msn_to_pytorch.py` maps them (`qkv` split into query, key and
/// value); the projection head (`fc.*`) and the prototypes are kept apart for continued MSN training.
public struct MSNCheckpoint {
    public let path: String
    public let config: ViTMSNConfig
    /// The encoder's tensors under `ViTMSNModel` names.
    public let encoder: TensorSource
    /// The projection head, named as in MSN without `module.` (`fc.fc1.weight`, `fc.bn1.running_mean`, …).
    public let projectionHead: [String: Tensor]
    public let prototypes: Tensor?
    public let epoch: Int?

    /// - Parameter heads: attention heads; by default hidden_size / 64, as in every released MSN model.
    public init(path: String, encoder which: String = "target_encoder", heads: Int? = nil) throws {
        self.path = path
        let checkpoint = try TorchCheckpoint(path: path)
        let prefix = which + ".module."
        func shape(_ name: String) throws -> [Int] {
            guard let info = checkpoint.info(prefix + name) else {
                throw CheckpointError(path, "not an MSN checkpoint: no tensor '\(prefix + name)'")
            }
            return info.shape
        }
        // The architecture, from the shapes.
        let patch = try shape("patch_embed.proj.weight")  // (D, C, P, P)
        let positions = try shape("pos_embed")             // (1, N + 1, D)
        // Checked before any dimension is read: the shapes come from the file.
        guard patch.count == 4, patch.allSatisfy({ $0 > 0 }), positions.count == 3, positions[1] >= 2,
              case let side = Int(Double(positions[1] - 1).squareRoot()), side * side == positions[1] - 1 else {
            throw CheckpointError(path, "unexpected patch_embed / pos_embed shapes \(patch), \(positions): (D, C, P, P) and (1, 1 + a square number of patches, D)")
        }
        let hidden = patch[0]
        let fc1 = try shape("blocks.0.mlp.fc1.weight")     // (I, D)
        guard fc1.count == 2, fc1[0] > 0 else { throw CheckpointError(path, "unexpected blocks.0.mlp.fc1.weight shape \(fc1): (I, D)") }
        let layers = Set(checkpoint.tensorNames.compactMap { name -> Int? in
            guard name.hasPrefix(prefix + "blocks.") else { return nil }
            return Int(name.dropFirst((prefix + "blocks.").count).prefix { $0 != "." })
        }).count
        var config = ViTMSNConfig()
        config.hiddenSize = hidden
        config.numChannels = patch[1]
        config.patchSize = .square(patch[2])
        config.imageSize = .square(side * patch[2])
        config.numHiddenLayers = layers
        config.numAttentionHeads = heads ?? max(hidden / 64, 1)
        config.intermediateSize = fc1[0]
        config.qkvBias = checkpoint.info(prefix + "blocks.0.attn.qkv.bias") != nil
        config.architectures = ["ViTMSNModel"]
        do { try config.validate() } catch let error as ConfigError { throw CheckpointError(path, error.description) }
        self.config = config

        // The renames of convert_msn_to_pytorch.py.
        var rules: [String: RenamedTensorSource.Rule] = [
            "embeddings.cls_token": .init(prefix + "cls_token"),
            "embeddings.position_embeddings": .init(prefix + "pos_embed"),
            "embeddings.patch_embeddings.projection.weight": .init(prefix + "patch_embed.proj.weight"),
            "embeddings.patch_embeddings.projection.bias": .init(prefix + "patch_embed.proj.bias"),
            "layernorm.weight": .init(prefix + "norm.weight"),
            "layernorm.bias": .init(prefix + "norm.bias"),
        ]
        for i in 0..<layers {
            let (from, to) = ("\(prefix)blocks.\(i).", "encoder.layer.\(i).")
            for kind in ["weight", "bias"] {
                rules[to + "layernorm_before.\(kind)"] = .init(from + "norm1.\(kind)")
                rules[to + "layernorm_after.\(kind)"] = .init(from + "norm2.\(kind)")
                rules[to + "attention.output.dense.\(kind)"] = .init(from + "attn.proj.\(kind)")
                rules[to + "intermediate.dense.\(kind)"] = .init(from + "mlp.fc1.\(kind)")
                rules[to + "output.dense.\(kind)"] = .init(from + "mlp.fc2.\(kind)")
                if kind == "weight" || config.qkvBias {
                    for (j, part) in ["query", "key", "value"].enumerated() {
                        rules[to + "attention.attention.\(part).\(kind)"] = .init(from + "attn.qkv.\(kind)", rows: (j * hidden)..<((j + 1) * hidden))
                    }
                }
            }
        }
        encoder = RenamedTensorSource(checkpoint, rules: rules)
        let headNames = checkpoint.tensorNames.filter { $0.hasPrefix(prefix + "fc.") }
        projectionHead = try Dictionary(uniqueKeysWithValues: headNames.map { (String($0.dropFirst(prefix.count)), try checkpoint.floatTensor($0)) })
        prototypes = checkpoint.info("prototypes") != nil ? try checkpoint.floatTensor("prototypes") : nil
        if case .dict(let root) = checkpoint.root {
            epoch = root.items.first { $0.key.stringValue == "epoch" }?.value.intValue.map(Int.init)
        } else {
            epoch = nil
        }
    }

    /// The target encoder as a `ViTMSNModel`.
    public func model() throws -> ViTMSNModel {
        let model = try ViTMSNModel(config: config)
        _ = try loadParameters(of: model, from: encoder, modelName: { $0 }, ignoring: [], optional: [])
        return model
    }

    /// Writes the encoder as a Transformers model directory, plus `msn_head.safetensors` with the projection
    /// head and prototypes (what continued MSN training needs).
    public func save(directory: String, dtype: DType = .F32) throws {
        try model().save(directory: directory, dtype: dtype)
        var extras = projectionHead.map { SafetensorsRecord(name: $0.key, tensor: $0.value) }
        if let prototypes { extras.append(SafetensorsRecord(name: "prototypes", tensor: prototypes)) }
        if !extras.isEmpty { try SafetensorsWriter.write(extras, to: directory + "/msn_head.safetensors") }
    }
}
