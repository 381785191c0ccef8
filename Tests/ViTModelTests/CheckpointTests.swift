import Foundation
import ViTCore
import ViTIO
import XCTest
@testable import ViTModel

func temporaryDirectory() throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("vitmsn-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Copies a fixture model directory so a test can damage its weights.
func copyOfFixtureModel(_ name: String) throws -> String {
    let directory = try temporaryDirectory()
    for file in ["config.json", "model.safetensors"] {
        try FileManager.default.copyItem(atPath: Fixtures.model(name) + "/" + file, toPath: directory + "/" + file)
    }
    return directory
}

/// Rewrites `model.safetensors` of `directory` with `edit` applied to its named tensors.
func rewriteWeights(_ directory: String, _ edit: (inout [String: Tensor]) -> Void) throws {
    let file = try SafetensorsFile(path: directory + "/model.safetensors")
    var tensors = try Dictionary(uniqueKeysWithValues: file.tensorNames.map { ($0, try file.floatTensor($0)) })
    edit(&tensors)
    try SafetensorsWriter.write(tensors.map { SafetensorsRecord(name: $0.key, tensor: $0.value) }, to: directory + "/model.safetensors")
}

final class CheckpointTests: XCTestCase {
    func testSavedModelReloadsWithIdenticalOutputs() throws {
        let original = try ViTMSNForImageClassification.load(directory: Fixtures.model("classifier_single"))
        let pixels = try Fixtures.pixels("classifier_no_labels")
        for dtype in [DType.F32, .BF16] {
            let directory = try temporaryDirectory()
            try original.save(directory: directory, dtype: dtype)
            let reloaded = try ViTMSNForImageClassification.load(directory: directory)
            XCTAssertEqual(reloaded.config.id2label, original.config.id2label)
            let before = try original.forward(pixelValues: pixels).logits
            let after = try reloaded.forward(pixelValues: pixels).logits
            XCTAssertEqual(after.maxAbsDifference(before), 0, accuracy: dtype == .F32 ? 0 : 0.1, "\(dtype)")
            if dtype == .F32 { XCTAssertEqual(after.scalars, before.scalars) }
        }
    }

    func testBackboneCheckpointGivesClassifierFreshHeadWithWarning() throws {
        var warnings: [String] = []
        let model = try ViTMSNForImageClassification.load(directory: Fixtures.model("base")) { warnings.append($0) }
        XCTAssertEqual(warnings.count, 1)
        XCTAssertTrue(warnings[0].contains("newly initialized: ['classifier.bias', 'classifier.weight']"))
        let weights = try XCTUnwrap(model.classifier).weight.scalars
        let std = (weights.map { $0 * $0 }.reduce(0, +) / Float(weights.count)).squareRoot()
        XCTAssertEqual(std, 0.02, accuracy: 0.004, "N(0, initializer_range²) initialisation")
        XCTAssertEqual(try XCTUnwrap(model.classifier?.bias).scalars, [Float](repeating: 0, count: 2))
        // The backbone is the checkpoint's, prefix or not.
        let backbone = try ViTMSNModel.load(directory: Fixtures.model("base"))
        XCTAssertEqual(model.vit.embeddings.clsToken.scalars, backbone.embeddings.clsToken.scalars)
    }

    func testClassifierCheckpointLoadsAsBackboneWithWarning() throws {
        var warnings: [String] = []
        let model = try ViTMSNModel.load(directory: Fixtures.model("classifier_single")) { warnings.append($0) }
        XCTAssertEqual(model.encoder.layer.count, 1)
        XCTAssertTrue(warnings.first?.contains("classifier.bias") ?? false, "\(warnings)")
    }

    func testMissingUnexpectedAndMisshapenTensorsAreAllListed() throws {
        let directory = try copyOfFixtureModel("base")
        try rewriteWeights(directory) { tensors in
            tensors["encoder.layer.1.output.dense.bias"] = nil
            tensors["encoder.layer.7.output.dense.bias"] = Tensor(zeros: [32])
            tensors["layernorm.weight"] = Tensor(zeros: [31])
        }
        XCTAssertThrowsError(try ViTMSNModel.load(directory: directory)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("missing tensors [\"encoder.layer.1.output.dense.bias\"]"), message)
            XCTAssertTrue(message.contains("unexpected tensors [\"encoder.layer.7.output.dense.bias\"]"), message)
            XCTAssertTrue(message.contains("layernorm.weight: checkpoint [31], model [32]"), message)
        }
    }

    func testHalfAClassifierIsAnError() throws {
        let directory = try copyOfFixtureModel("classifier_single")
        try rewriteWeights(directory) { $0["classifier.bias"] = nil }
        XCTAssertThrowsError(try ViTMSNForImageClassification.load(directory: directory)) { error in
            XCTAssertTrue("\(error)".contains("classifier.bias"), "\(error)")
        }
    }

    func testMissingFilesAreNamed() throws {
        let directory = try temporaryDirectory()
        XCTAssertThrowsError(try AnyViTMSN.load(directory: directory)) { XCTAssertTrue("\($0)".contains("no config.json"), "\($0)") }
        try FileManager.default.copyItem(atPath: Fixtures.model("base") + "/config.json", toPath: directory + "/config.json")
        XCTAssertThrowsError(try AnyViTMSN.load(directory: directory)) { XCTAssertTrue("\($0)".contains("no model.safetensors, pytorch_model.bin"), "\($0)") }
    }

    func testShardedCheckpointMatchesSingleFile() throws {
        let sharded = try ViTMSNModel.load(directory: Fixtures.model("base_sharded"))
        let single = try ViTMSNModel.load(directory: Fixtures.model("base"))
        for ((name, a), (_, b)) in zip(sharded.namedParameters, single.namedParameters) {
            XCTAssertEqual(a.scalars, b.scalars, name)
        }
    }

    func testRandomModelHasThePublishedParameterCounts() throws {
        // Counts from the released checkpoints (hf_vitmsn_spec.md §3.2).
        let small = try ViTMSNModel(config: ViTMSNConfig.preset("small"))
        XCTAssertEqual(small.parameterCount, 21_665_664)
        let base4 = try ViTMSNModel(config: ViTMSNConfig.preset("facebook/vit-msn-base-4"))
        XCTAssertEqual(base4.parameterCount, 87_503_616)
    }
}
