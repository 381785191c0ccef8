import Foundation
import ViTCore
import ViTIO
import ViTMSN
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
            let settings = try MSNLossSettings(configPath: directory + "/msn_config.json")
            let viewsFile = try SafetensorsFile(path: directory + "/views.safetensors")
            let views = MSNViews(
                target: try viewsFile.floatTensor("target"), anchor: try viewsFile.floatTensor("anchor"),
                focal: viewsFile.info("focal") == nil ? nil : try viewsFile.floatTensor("focal"),
                keep: try viewsFile.integerValues("keep").map(Int.init))
            model.zeroGradients()
            let result = try msnForwardBackward(model, targetEncoder: model.encoder, targetHead: model.head, views: views, settings: settings)
            let expected = try SafetensorsFile(path: directory + "/expected.safetensors")
            for (name, value) in [("loss", result.loss), ("ploss", result.ploss), ("rloss", result.rloss), ("sloss", result.sloss)] {
                XCTAssertEqual(value, try expected.floatTensor(name).scalars[0], accuracy: manifest.loss_atol, "\(fixture.name): \(name)")
            }
            XCTAssertLessThan(result.targets.maxAbsDifference(try expected.floatTensor("targets")), 1e-5, "\(fixture.name): targets")
            var worst: (Float, String) = (0, "")
            var checked = 0
            let scale = norm(result.prototypeGradient)
            model.visitParameters { name, _, gradient in
                let reference = try! expected.floatTensor("grad." + name)
                // Gradients that are zero in exact arithmetic, so both sides hold rounding noise: the key bias
                // (softmax ignores a shift shared by a row of scores), and whatever only shifts a BatchNorm input
                // by the same vector for every row (fc1 and fc2 biases, the final LayerNorm bias).
                if ["key.bias", "fc1.bias", "fc2.bias"].contains(where: name.hasSuffix) || name == "layernorm.bias" {
                    XCTAssertLessThan(norm(gradient!), 1e-5 * scale, "\(fixture.name): \(name)")
                    XCTAssertLessThan(norm(reference), 1e-5 * scale, "\(fixture.name): \(name) (PyTorch)")
                    return
                }
                let error = gradient!.relativeDifference(reference)
                if error > worst.0 { worst = (error, name) }
                XCTAssertLessThanOrEqual(error, manifest.gradient_rtol, "\(fixture.name): grad.\(name)")
                checked += 1
            }
            XCTAssertGreaterThan(checked, 30)
            print("msn-step \(fixture.name): loss \(result.loss), worst gradient error \(worst.0) (\(worst.1))")
        }
    }

    private func norm(_ t: Tensor) -> Float { t.scalars.reduce(0) { $0 + $1 * $1 }.squareRoot() }
}
