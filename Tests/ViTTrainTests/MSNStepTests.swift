import Foundation
import ViTCore
import ViTIO
import ViTModel
import XCTest
@testable import ViTTrain

/// Tests/Fixtures/msn, written by scripts/make_msn_fixtures.py from a PyTorch MSN step written from the
/// official code.
final class MSNStepTests: XCTestCase {
    struct Manifest: Decodable {
        struct Case: Decodable { let name: String; let focal_views: Int }
        let loss_atol: Float
        let gradient_rtol: Float
        let cases: [Case]
    }

    func testStepMatchesPyTorchReference() throws {
        let root = TrainingFixtures.root.deletingLastPathComponent().appendingPathComponent("msn")
        let manifest = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: root.appendingPathComponent("cases.json")))
        XCTAssertEqual(manifest.cases.count, 2)
        for fixture in manifest.cases {
            let directory = root.appendingPathComponent(fixture.name).path
            let model = try MSNModel.load(directory: directory)
            // The path `vitmsn msn-step` takes: views from a file, results written to one and read back.
            let output = FileManager.default.temporaryDirectory.appendingPathComponent("msn-step-\(fixture.name)-\(UUID()).safetensors").path
            defer { try? FileManager.default.removeItem(atPath: output) }
            try writeMSNStep(model, views: try MSNViews(file: directory + "/views.safetensors"),
                             settings: try MSNLossSettings(configPath: directory + "/msn_config.json"), to: output)
            let result = try SafetensorsFile(path: output)
            let expected = try SafetensorsFile(path: directory + "/expected.safetensors")
            for name in ["loss", "ploss", "rloss", "sloss"] {
                XCTAssertEqual(try result.floatTensor(name).scalars[0], try expected.floatTensor(name).scalars[0], accuracy: manifest.loss_atol, "\(fixture.name): \(name)")
            }
            XCTAssertLessThan(try result.floatTensor("targets").maxAbsDifference(try expected.floatTensor("targets")), 1e-5, "\(fixture.name): targets")
            var worst: (Float, String) = (0, "")
            var checked = 0
            let scale = norm(try result.floatTensor("grad.prototypes"))
            model.visitParameters { name, _, _ in
                guard let gradient = try? result.floatTensor("grad." + name) else { return XCTFail("\(fixture.name): no grad.\(name) written") }
                let reference = try! expected.floatTensor("grad." + name)
                // Gradients that are zero in exact arithmetic, so both sides hold rounding noise: the key bias
                // (softmax ignores a shift shared by a row of scores), and whatever only shifts a BatchNorm input
                // by the same vector for every row (fc1 and fc2 biases, the final LayerNorm bias).
                if ["key.bias", "fc1.bias", "fc2.bias"].contains(where: name.hasSuffix) || name == "layernorm.bias" {
                    XCTAssertLessThan(norm(gradient), 1e-5 * scale, "\(fixture.name): \(name)")
                    XCTAssertLessThan(norm(reference), 1e-5 * scale, "\(fixture.name): \(name) (PyTorch)")
                    return
                }
                let error = gradient.relativeDifference(reference)
                if error > worst.0 { worst = (error, name) }
                XCTAssertLessThanOrEqual(error, manifest.gradient_rtol, "\(fixture.name): grad.\(name)")
                checked += 1
            }
            XCTAssertGreaterThan(checked, 30)
            print("msn-step \(fixture.name): loss \(try result.floatTensor("loss").scalars[0]), worst gradient error \(worst.0) (\(worst.1))")
        }
    }

    /// The monitored target entropy is the mean entropy of the target rows, between 0 and log K.
    func testTargetEntropyIsTheMeanRowEntropy() throws {
        let directory = TrainingFixtures.root.deletingLastPathComponent().appendingPathComponent("msn/sinkhorn_focal").path
        let model = try MSNModel.load(directory: directory)
        model.zeroGradients()
        let result = try msnForwardBackward(model, targetEncoder: model.encoder, targetHead: model.head, views: try MSNViews(file: directory + "/views.safetensors"),
                                            settings: try MSNLossSettings(configPath: directory + "/msn_config.json"))
        let (rows, k) = (result.targets.shape[0], result.targets.shape[1])
        let entropy = result.targets.scalars.reduce(0.0) { $1 > 0 ? $0 - Double($1) * log(Double($1)) : $0 } / Double(rows)
        XCTAssertEqual(Double(result.targetEntropy), entropy, accuracy: 1e-5)
        XCTAssertGreaterThan(result.targetEntropy, 0)
        XCTAssertLessThan(Double(result.targetEntropy), log(Double(k)))
    }

    /// A NaN anywhere in the networks reaches the loss (nothing in the loss skips it), so training stops.
    func testNaNWeightGivesNaNLoss() throws {
        let directory = TrainingFixtures.root.deletingLastPathComponent().appendingPathComponent("msn/sinkhorn_focal").path
        for poisoned in ["encoder.layer.0.attention.attention.query.weight", "fc.fc1.weight", "prototypes"] {
            let model = try MSNModel.load(directory: directory)
            model.visitParameters { name, value in if name == poisoned { value.withUnsafeMutableBufferPointer { $0[0] = .nan } } }
            model.zeroGradients()
            let result = try msnForwardBackward(model, targetEncoder: model.encoder, targetHead: model.head, views: try MSNViews(file: directory + "/views.safetensors"),
                                                settings: try MSNLossSettings(configPath: directory + "/msn_config.json"))
            XCTAssertTrue(result.loss.isNaN, "\(poisoned): loss \(result.loss)")
        }
    }

    private func norm(_ t: Tensor) -> Float { t.scalars.reduce(0) { $0 + $1 * $1 }.squareRoot() }
}
