import Foundation
import ViTCore
import ViTIO
import XCTest
import ViTModel
@testable import ViTTrain

final class MSNCheckpointTests: XCTestCase {
    let path = Fixtures.root.appendingPathComponent("torch/msn_tiny.pth.tar").path

    func testTargetEncoderConvertsAsTransformersDoes() throws {
        let checkpoint = try MSNCheckpoint(path: path)
        let config = checkpoint.config
        XCTAssertEqual([config.hiddenSize, config.numAttentionHeads, config.numHiddenLayers, config.intermediateSize], [64, 1, 1, 37])
        XCTAssertEqual([config.patchSize.height, config.imageSize.height, config.numChannels], [4, 16, 3])
        XCTAssertEqual(checkpoint.epoch, 7)
        XCTAssertEqual(checkpoint.prototypes?.shape, [10, 16])
        XCTAssertEqual(Set(checkpoint.projectionHead.keys), [
            "fc.fc1.weight", "fc.fc1.bias", "fc.bn1.weight", "fc.bn1.bias", "fc.bn1.running_mean", "fc.bn1.running_var",
            "fc.bn1.num_batches_tracked", "fc.fc3.weight", "fc.fc3.bias",
        ])
        let model = try checkpoint.model()
        let outputs = try model.forward(pixelValues: Fixtures.pixels("msn_checkpoint")).lastHiddenState
        let expected = try SafetensorsFile(path: Fixtures.expected("msn_checkpoint")).floatTensor("last_hidden_state")
        XCTAssertLessThanOrEqual(outputs.maxAbsDifference(expected), 1e-5)
    }

    func testConvertedDirectoryKeepsHeadAndPrototypes() throws {
        let checkpoint = try MSNCheckpoint(path: path)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vitmsn-msn-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try checkpoint.save(directory: directory)
        let reloaded = try ViTMSNModel.load(directory: directory)
        let pixels = try Fixtures.pixels("msn_checkpoint")
        XCTAssertEqual(try reloaded.forward(pixelValues: pixels).lastHiddenState.scalars,
                       try checkpoint.model().forward(pixelValues: pixels).lastHiddenState.scalars)
        let extras = try SafetensorsFile(path: directory + "/msn_head.safetensors")
        XCTAssertTrue(extras.tensorNames.contains("prototypes"))
        XCTAssertTrue(extras.tensorNames.contains("fc.fc3.weight"))
    }

    func testAPlainStateDictIsNotAnMSNCheckpoint() {
        XCTAssertThrowsError(try MSNCheckpoint(path: Fixtures.model("base_bin") + "/pytorch_model.bin")) { error in
            XCTAssertTrue("\(error)".contains("not an MSN checkpoint: no tensor 'target_encoder.module.patch_embed.proj.weight'"), "\(error)")
        }
    }

    /// Shapes that describe no ViT (no patches, a flat or 0-dim tensor) are errors naming the file, not traps.
    func testShapesThatDescribeNoViTAreRefused() {
        for (name, tensor) in [("no_positions", "pos_embed"), ("flat_positions", "pos_embed"), ("scalar_patch", "patch_embed"), ("scalar_fc1", "fc1")] {
            let path = Fixtures.root.appendingPathComponent("torch/msn_\(name).pth.tar").path
            XCTAssertThrowsError(try MSNCheckpoint(path: path)) { error in
                XCTAssertTrue("\(error)".contains(path) && "\(error)".contains("unexpected") && "\(error)".contains(tensor), "\(error)")
            }
        }
    }
}

/// The model fixtures of ViTModelTests, which the checkpoint conversion is checked against.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
    static func model(_ name: String) -> String { root.appendingPathComponent("models/\(name)").path }
    static func expected(_ name: String) -> String { root.appendingPathComponent("cases/\(name).expected.safetensors").path }
    static func pixels(_ name: String) throws -> Tensor {
        try SafetensorsFile(path: root.appendingPathComponent("cases/\(name).inputs.safetensors").path).floatTensor("pixel_values")
    }
}
