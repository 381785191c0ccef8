import Foundation
import ViTCore
import ViTIO
import XCTest
@testable import ViTModel

final class PrecisionTests: XCTestCase {
    func cosine(_ a: Tensor, _ b: Tensor) -> Double {
        let (x, y) = (a.scalars.map(Double.init), b.scalars.map(Double.init))
        let dot = zip(x, y).reduce(0) { $0 + $1.0 * $1.1 }
        return dot / (x.reduce(0) { $0 + $1 * $1 }.squareRoot() * y.reduce(0) { $0 + $1 * $1 }.squareRoot())
    }

    func load(_ precision: WeightPrecision, _ directory: String = Fixtures.model("classifier_single")) throws -> ViTMSNForImageClassification {
        guard case .imageClassification(let model) = try AnyViTMSN.load(directory: directory, precision: precision) else { throw XCTSkip("not a classifier") }
        return model
    }

    func testLowPrecisionHiddenStatesStayCloseToF32() throws {
        let pixels = try Fixtures.pixels("classifier_no_labels")
        let reference = try load(.f32).vit.forward(pixelValues: pixels).lastHiddenState
        for (precision, least) in [(WeightPrecision.bf16, 0.999), (.f16, 0.999), (.int8, 0.995)] {
            let model = try load(precision)
            XCTAssertEqual(model.vit.isQuantized, precision == .int8)
            XCTAssertEqual(model.vit.quantizedWeightBits, precision == .int8 ? QuantizedMatrix.preferredBits : nil)
            let state = try model.vit.forward(pixelValues: pixels).lastHiddenState
            XCTAssertGreaterThan(cosine(state, reference), least, "\(precision)")
            XCTAssertNotEqual(state.scalars, reference.scalars, "\(precision) changed nothing")
        }
    }

    func testHalfPrecisionRoundsEveryParameter() throws {
        let model = try load(.bf16)
        for (name, tensor) in model.namedParameters {
            XCTAssertTrue(tensor.scalars.allSatisfy { $0.bitPattern & 0xFFFF == 0 }, "\(name) is not bf16")
        }
    }

    /// The encoder's Linear layers, and the patch embedding where the kernel takes 8-bit weights (not AVX2).
    func testInt8QuantisesTheEncoderLinearsAndPatchEmbeddingOnly() throws {
        let model = try load(.int8)
        let quantized = model.vit.quantizableLinears
        XCTAssertEqual(quantized.count, 1 + 6 * model.config.numHiddenLayers)
        let patchEmbeddingInt8 = QuantizedMatrix.preferredBits == 8
        XCTAssertTrue(quantized.allSatisfy { ($0.layer.quantizedWeight != nil) == ($0.name.hasPrefix("encoder.") || patchEmbeddingInt8) })
        XCTAssertEqual(model.vit.embeddings.patchEmbeddings.projection.quantizedWeight != nil, patchEmbeddingInt8)
        XCTAssertNil(model.classifier!.quantizedWeight)
        XCTAssertFalse(model.namedParameters.contains { $0.name.hasSuffix("query.weight") }, "an int8 weight is not a float parameter")
        XCTAssertEqual(model.namedParameters.contains { $0.name.hasSuffix("projection.weight") }, !patchEmbeddingInt8)
        XCTAssertTrue(try load(.f32).namedParameters.contains { $0.tensor.storage.isFileMapped }, "the fixture loads mapped")
        XCTAssertFalse(model.namedParameters.contains { $0.tensor.storage.isFileMapped },
                       "f32 parameters left in the mapped checkpoint keep its pages around them resident")
    }

    func testInt8DirectoryReloadsWithoutRequantising() throws {
        for bits in [8, 7] { try checkInt8DirectoryReloads(bits: bits) }
    }

    func checkInt8DirectoryReloads(bits: Int) throws {
        let pixels = try Fixtures.pixels("classifier_no_labels")
        let model = try load(.f32)
        for (_, layer) in model.vit.quantizableLinears { layer.quantize(bits: bits) }
        XCTAssertEqual(model.vit.quantizedWeightBits, bits)
        let directory = try temporaryDirectory()
        try model.save(directory: directory)
        let file = try SafetensorsFile(path: directory + "/model.safetensors")
        let name = "vit.encoder.layer.0.attention.attention.query.weight"
        XCTAssertEqual(file.info(name)?.dtype, .I8)
        XCTAssertEqual(file.info(name + "_scale")?.dtype, .F32)
        let projection = "vit.embeddings.patch_embeddings.projection.weight"
        XCTAssertEqual(file.info(projection)?.dtype, .I8)
        XCTAssertEqual(file.info(projection)?.shape, model.vit.embeddings.patchEmbeddings.projection.weightShape, "the convolution's own shape")
        XCTAssertEqual(file.info(projection)?.shape.count, 4)
        XCTAssertEqual(file.info("classifier.weight")?.dtype, .F32)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/config.json"))) as! [String: Any]
        XCTAssertEqual((config["quantization_config"] as? [String: Any])?["quant_method"] as? String, Int8Checkpoint.method)
        XCTAssertEqual((config["quantization_config"] as? [String: Any])?["weight_bits"] as? Int, bits)
        XCTAssertEqual(config["dtype"] as? String, "float32")
        XCTAssertNil(config["torch_dtype"], "Transformers 4.57 writes dtype only")

        let reloaded = try load(.f32, directory)
        XCTAssertTrue(reloaded.vit.isQuantized, "an int8 directory loads as int8")
        XCTAssertEqual(reloaded.vit.quantizedWeightBits, bits)
        for (stored, original) in zip(reloaded.vit.quantizableLinears, model.vit.quantizableLinears) {
            XCTAssertEqual(stored.layer.quantizedWeight!.values, original.layer.quantizedWeight!.values, stored.name)
            XCTAssertEqual(stored.layer.quantizedWeight!.scales, original.layer.quantizedWeight!.scales, stored.name)
        }
        XCTAssertEqual(try reloaded.forward(pixelValues: pixels).logits.scalars, try model.forward(pixelValues: pixels).logits.scalars)
    }

    func testBadInt8TensorsAreNamed() throws {
        let directory = try temporaryDirectory()
        try load(.int8).save(directory: directory)
        let path = directory + "/model.safetensors"
        let file = try SafetensorsFile(path: path)
        let name = "vit.encoder.layer.0.intermediate.dense.weight"
        func rewrite(naming name: String = name, _ edit: (inout [SafetensorsRecord]) -> Void) throws {
            var records = try file.tensorNames.map { tensor -> SafetensorsRecord in
                let info = file.info(tensor)!
                return info.dtype == .I8
                    ? SafetensorsRecord(name: tensor, int8: try file.floatTensor(tensor).scalars.map { Int8($0) }, shape: info.shape)
                    : SafetensorsRecord(name: tensor, tensor: try file.floatTensor(tensor))
            }
            edit(&records)
            let damaged = try temporaryDirectory()
            try FileManager.default.copyItem(atPath: directory + "/config.json", toPath: damaged + "/config.json")
            try SafetensorsWriter.write(records, to: damaged + "/model.safetensors")
            XCTAssertThrowsError(try load(.f32, damaged)) { error in
                XCTAssertTrue("\(error)".contains(name), "\(error)")
            }
        }
        try rewrite { records in records.removeAll { $0.name == name + "_scale" } }
        try rewrite { records in
            let index = records.firstIndex { $0.name == name }!
            records[index] = SafetensorsRecord(name: name, int8: [Int8](repeating: -128, count: Tensor.elementCount(records[index].shape)), shape: records[index].shape)
        }
        let projection = "vit.embeddings.patch_embeddings.projection.weight"
        try rewrite(naming: projection) { records in  // flattened to (out, in): not the convolution's shape
            let index = records.firstIndex { $0.name == projection }!
            let shape = records[index].shape
            records[index] = SafetensorsRecord(name: projection, int8: [Int8](repeating: 1, count: Tensor.elementCount(shape)), shape: [shape[0], Tensor.elementCount(shape) / shape[0]])
        }
    }
}
