import Foundation
import XCTest
@testable import ViTModel

final class ConfigTests: XCTestCase {
    func json(_ text: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    func testTransformersConfigIsReadAndUnknownKeysSurviveARoundTrip() throws {
        let config = try ViTMSNConfig.load(path: Fixtures.model("classifier_single") + "/config.json")
        XCTAssertEqual(config.hiddenSize, 32)
        XCTAssertEqual(config.numLabels, 5)
        XCTAssertEqual(config.id2label[0], "ankle boot")
        XCTAssertEqual(config.label2id["pullover"], 4)
        XCTAssertEqual(config.architectures, ["ViTMSNForImageClassification"])
        XCTAssertEqual(config.layerNormEps, 1e-6)

        let path = try temporaryDirectory() + "/config.json"
        try config.save(path: path)
        let written = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        XCTAssertEqual((written["my_custom_field"] as? [String: Any])?["kept"] as? [Int], [1, 2, 3])
        XCTAssertEqual(written["transformers_version"] as? String, "4.57.6")
        let reread = try ViTMSNConfig.load(path: path)
        XCTAssertEqual(reread.id2label, config.id2label)
        XCTAssertEqual(reread.imageSize, config.imageSize)
    }

    func testPairSizesAndDefaults() throws {
        let config = try ViTMSNConfig(json: json(#"{"image_size": [16, 24], "patch_size": [4, 4], "num_labels": 1}"#))
        XCTAssertEqual(config.imageSize, Size2(height: 16, width: 24, isPair: true))
        XCTAssertEqual(config.numPatches, 24)
        XCTAssertEqual(config.numLabels, 1)
        XCTAssertEqual(config.hiddenSize, 768)
        XCTAssertEqual(config.jsonObject()["image_size"] as? [Int], [16, 24])
        XCTAssertEqual(config.jsonObject()["patch_size"] as? [Int], [4, 4])
        XCTAssertEqual(try ViTMSNConfig(json: [:]).numLabels, 2, "Transformers' default")
    }

    func testInvalidFieldsAreNamed() throws {
        let cases: [(String, String, String)] = [
            (#"{"hidden_size": 100, "num_attention_heads": 12}"#, "hidden_size", "not a multiple of the number of attention heads 12"),
            (#"{"num_hidden_layers": 0}"#, "num_hidden_layers", "must be positive"),
            (#"{"intermediate_size": -5}"#, "intermediate_size", "must be positive"),
            (#"{"hidden_act": "gelu_magic"}"#, "hidden_act", "unknown activation 'gelu_magic'"),
            (#"{"patch_size": [4]}"#, "patch_size", "wrong type"),
            (#"{"hidden_size": "big"}"#, "hidden_size", "wrong type"),
            (#"{"qkv_bias": 1}"#, "qkv_bias", "wrong type"),
            (#"{"problem_type": "ranking"}"#, "problem_type", "'ranking' is not one of"),
            (#"{"model_type": "vit"}"#, "model_type", "expected 'vit_msn'"),
            (#"{"id2label": {"0": "a", "2": "b"}}"#, "id2label", "class indices"),
            (#"{"hidden_dropout_prob": 1.5}"#, "hidden_dropout_prob", "probability"),
            // Sizes that no memory holds are refused from the numbers, before anything is allocated.
            (#"{"hidden_size": 1000000000, "num_attention_heads": 1}"#, "hidden_size", "for its f32 parameters alone, above the limit"),
            (#"{"num_labels": 1000000000}"#, "num_labels", "above the limit"),
            (#"{"image_size": 8589934592, "patch_size": 1}"#, "image_size", "more memory than can be counted"),
            (#"{"num_labels": 1000000000, "patch_size": 0}"#, "num_labels", "above the limit"),
        ]
        for (text, field, reason) in cases {
            XCTAssertThrowsError(try ViTMSNConfig(json: json(text)), text) { error in
                let configError = error as? ConfigError
                XCTAssertEqual(configError?.field, field, text)
                XCTAssertTrue(configError?.reason.contains(reason) ?? false, "\(error)")
            }
        }
    }

    func testPresetsMatchTheReleasedCheckpoints() throws {
        let shapes: [String: (Int, Int, Int, Int, Int)] = [
            "small": (384, 12, 6, 1536, 16), "base": (768, 12, 12, 3072, 16), "large": (1024, 24, 16, 4096, 16),
            "base-4": (768, 12, 12, 3072, 4), "large-7": (1024, 24, 16, 4096, 7),
        ]
        for (name, shape) in shapes {
            let config = try ViTMSNConfig.preset(name)
            XCTAssertEqual(config.hiddenSize, shape.0, name)
            XCTAssertEqual(config.numHiddenLayers, shape.1, name)
            XCTAssertEqual(config.numAttentionHeads, shape.2, name)
            XCTAssertEqual(config.intermediateSize, shape.3, name)
            XCTAssertEqual(config.patchSize.height, shape.4, name)
            XCTAssertNoThrow(try config.validate())
        }
        XCTAssertEqual(try ViTMSNConfig.preset("large-7").numPatches + 1, 1025)
        XCTAssertEqual(try ViTMSNConfig.preset("base-4").numPatches + 1, 3137)
        XCTAssertThrowsError(try ViTMSNConfig.preset("huge"))
    }
}
