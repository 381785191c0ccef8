import Foundation
import ViTCore
import XCTest
@testable import ViTIO

final class ConfigFileTests: XCTestCase {
    /// A config laid out as the official MSN yaml is: sections, scalars of every kind, flow lists, comments.
    static let officialStyle = """
        criterion:
          final_sharpen: 0.25
          me_max: true
          memax_weight: 1.0
          num_proto: 1024
          use_sinkhorn: true
        data:
          focal_views: 10   # small crops per image
          rand_scale:
          - 0.3
        """

    func testParsesTheOfficialLayout() throws {
        let text = """
            # pretraining
            criterion:
              final_sharpen: 0.25
              me_max: true
              num_proto: 1024
              temperature: 1.0e-1
            data:
              color_jitter_strength: 0.5
              focal_scale: [0.05, 0.3]
              image_folder: 'imagenet_full_size/061417/'   # a comment
              root_path: $your_data_path
            meta:
              load_checkpoint: false
              model_name: deit_small
              read_checkpoint: null
              nested:
                depth: 2
            optimization:
              final_lr: 1.0e-06
              epochs: 800
            """
        let config = try parseYAMLConfig(text, path: "msn.yaml")
        let criterion = try XCTUnwrap(config["criterion"] as? [String: Any])
        XCTAssertEqual(jsonNumber(criterion["final_sharpen"]!), 0.25)
        XCTAssertEqual(criterion["me_max"] as? Bool, true)
        XCTAssertEqual(jsonInteger(criterion["num_proto"]!), 1024)
        XCTAssertEqual(jsonNumber(criterion["temperature"]!), 0.1)
        let data = try XCTUnwrap(config["data"] as? [String: Any])
        XCTAssertEqual((data["focal_scale"] as? [NSNumber])?.map(\.doubleValue), [0.05, 0.3])
        XCTAssertEqual(data["image_folder"] as? String, "imagenet_full_size/061417/")
        XCTAssertEqual(data["root_path"] as? String, "$your_data_path")
        let meta = try XCTUnwrap(config["meta"] as? [String: Any])
        XCTAssertEqual(meta["load_checkpoint"] as? Bool, false)
        XCTAssertTrue(meta["read_checkpoint"] is NSNull)
        XCTAssertEqual(jsonInteger((meta["nested"] as? [String: Any])?["depth"] ?? 0), 2)
        XCTAssertEqual(jsonNumber((config["optimization"] as? [String: Any])?["final_lr"] ?? 0), 1e-6)
        XCTAssertEqual(jsonInteger((config["optimization"] as? [String: Any])?["epochs"] ?? 0), 800)
    }

    /// Block sequences (as the official configs write lists) read as JSON arrays.
    func testBlockSequences() throws {
        let data = try XCTUnwrap(try parseYAMLConfig(Self.officialStyle, path: "c.yaml")["data"] as? [String: Any])
        XCTAssertEqual((data["rand_scale"] as? [NSNumber])?.map(\.doubleValue), [0.3])
        XCTAssertEqual(jsonInteger(data["focal_views"]!), 10)
    }

    func testMalformedYAMLIsAnErrorNamingTheLine() {
        for (text, words) in [
            ("a:\n  b: 1\n c: 2", "c.yaml: line 3"),
            ("a:\n\tb: 1", "c.yaml: line 2"),
            ("a: 1\na: 2", "'a' appears twice"),
            ("a: [1, 2", "c.yaml: line"),
            ("just text", "top level must be a mapping"),
            ("? [1, 2]\n: x", "not a string"), // Yams's own constructor traps on this key
            ("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\na1: &a1 [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0]\na2: &a2 [*a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1]\na3: &a3 [*a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2]\na4: &a4 [*a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3]\na5: &a5 [*a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4]\na6: &a6 [*a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5]\na7: &a7 [*a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6]\n", "more than 100,000 YAML nodes"), // aliases nested ten wide: 10⁸ nodes if expanded
            ("a: !!binary aGk=", "not a string, number, boolean or null"),
        ] {
            XCTAssertThrowsError(try parseYAMLConfig(text, path: "c.yaml")) { error in
                XCTAssertTrue("\(error)".contains(words), "\(text): \(error)")
            }
        }
    }

    /// Random edits of a valid config parse or throw; nothing crashes.
    func testMutatedConfigsParseOrThrow() {
        let original = Array("""
            meta:
              model: fashion-mnist
              architecture:
                hidden_size: 192
            data:
              rand_scale: [0.3, 1.0]
              dataset: "fashion-mnist"  # built in
            """.utf8)
        var generator = SeededGenerator(seed: 11)
        let alphabet = Array(" :#-[],\"'\n\tab0.~&{".utf8)
        var parsed = 0
        for _ in 0..<2000 {
            var bytes = original
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                let position = Int.random(in: 0..<bytes.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: bytes[position] = alphabet.randomElement(using: &generator)!
                case 1: bytes.remove(at: position)
                default: bytes.insert(alphabet.randomElement(using: &generator)!, at: position)
                }
            }
            if (try? parseYAMLConfig(String(decoding: bytes, as: UTF8.self), path: "m.yaml")) != nil { parsed += 1 }
        }
        XCTAssertGreaterThan(parsed, 100) // many edits still leave a valid config
        XCTAssertLessThan(parsed, 2000)
    }
}
