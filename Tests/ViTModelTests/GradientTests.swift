import Foundation
import ViTCore
import ViTIO
import XCTest
@testable import ViTModel

/// Tests/Fixtures/training, written by scripts/make_training_fixtures.py from PyTorch autograd.
enum TrainingFixtures {
    static let root = Fixtures.root.appendingPathComponent("training")

    struct Case: Decodable {
        let name: String
        let model: String
        let kind: String
        let interpolate_pos_encoding: Bool?
    }

    struct Manifest: Decodable {
        let gradient_rtol: Float
        let cases: [Case]
    }

    static func manifest() throws -> Manifest {
        try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: root.appendingPathComponent("cases.json")))
    }

    static func file(_ name: String) throws -> SafetensorsFile {
        try SafetensorsFile(path: root.appendingPathComponent("\(name).safetensors").path)
    }

    static func model(_ name: String) -> String { root.appendingPathComponent(name).path }
}


func norm(_ tensor: Tensor) -> Float { tensor.scalars.reduce(0) { $0 + $1 * $1 }.squareRoot() }

final class GradientTests: XCTestCase {
    /// Every gradient case: loss, every parameter gradient and the input gradient against PyTorch autograd.
    func testGradientsMatchPyTorchAutograd() throws {
        let manifest = try TrainingFixtures.manifest()
        let cases = manifest.cases.filter { $0.kind != "optimizer" }
        XCTAssertGreaterThanOrEqual(cases.count, 7)
        var worst: (error: Float, where: String) = (0, "")
        defer { print("gradients: \(cases.count) cases, worst relative error \(worst.error) (\(worst.where))") }
        for fixture in cases {
            let file = try TrainingFixtures.file(fixture.name)
            let pixels = try file.floatTensor("pixel_values")
            let (module, loss, inputGradient) = try runCase(fixture, file: file, pixels: pixels)
            XCTAssertEqual(loss, try file.floatTensor("loss").scalars[0], accuracy: 1e-5 * max(1, abs(loss)), "\(fixture.name): loss")
            var expected = file.tensorNames.filter { $0.hasPrefix("grad.") && $0 != "grad.pixel_values" }
            module.visitParameters { name, _, gradient in
                guard let index = expected.firstIndex(of: "grad." + name) else {
                    return XCTFail("\(fixture.name): PyTorch has no gradient for \(name)")
                }
                expected.remove(at: index)
                let reference = try! file.floatTensor("grad." + name)
                if name.hasSuffix("key.bias") {
                    // Its true gradient is zero (softmax ignores a shift shared by a row of scores): both sides
                    // hold rounding noise, so check that each is negligible next to the key weight's gradient.
                    let scale = norm(try! file.floatTensor("grad." + name.replacingOccurrences(of: "bias", with: "weight")))
                    XCTAssertLessThan(norm(gradient!), 1e-5 * scale, "\(fixture.name): \(name)")
                    XCTAssertLessThan(norm(reference), 1e-5 * scale, "\(fixture.name): \(name) (PyTorch)")
                    return
                }
                let error = gradient!.relativeDifference(reference)
                if error > worst.error { worst = (error, "\(fixture.name) \(name)") }
                XCTAssertLessThanOrEqual(error, manifest.gradient_rtol, "\(fixture.name): \(name)")
            }
            XCTAssertEqual(expected, [], "\(fixture.name): gradients Swift did not compute")
            let error = inputGradient.relativeDifference(try file.floatTensor("grad.pixel_values"))
            if error > worst.error { worst = (error, "\(fixture.name) pixel_values") }
            XCTAssertLessThanOrEqual(error, manifest.gradient_rtol, "\(fixture.name): input gradient")
        }
    }

    private func runCase(_ fixture: TrainingFixtures.Case, file: SafetensorsFile, pixels: Tensor) throws -> (NN.Module, Float, Tensor) {
        var eval: NN.Dropout? = nil
        if fixture.kind == "backbone" {
            let model = try ViTMSNModel.load(directory: TrainingFixtures.model(fixture.model))
            model.zeroGradients()
            let keepValues = try file.integerValues("keep").map(Int.init)
            let kept = keepValues.count / pixels.shape[0]
            let keep = (0..<pixels.shape[0]).map { Array(keepValues[($0 * kept)..<(($0 + 1) * kept)]) }
            let (last, activations) = try model.forwardTraining(pixelValues: pixels, keep: keep, dropout: &eval)
            let weights = try file.floatTensor("output_weights")
            XCTAssertLessThan(last.maxAbsDifference(try file.floatTensor("last_hidden_state")), 1e-5)
            let loss = zip(last.scalars, weights.scalars).reduce(Float(0)) { $0 + $1.0 * $1.1 }
            let inputGradient = model.backward(activations, lastHiddenStateGradient: weights, inputGradient: true)!
            return (model, loss, inputGradient)
        }
        let model = try ViTMSNForImageClassification.load(directory: TrainingFixtures.model(fixture.model))
        model.config.problemType = nil // inferred from the labels, as in the fixture
        model.zeroGradients()
        let labelInfo = file.info("labels")!
        let labels: ClassificationLabels = labelInfo.dtype.isFloatingPoint
            ? .values(try file.floatTensor("labels")) : .classIndices(try file.integerValues("labels"))
        let (loss, logits, activations) = try model.forwardTraining(
            pixelValues: pixels, labels: labels, interpolatePosEncoding: fixture.interpolate_pos_encoding ?? false, dropout: &eval)
        XCTAssertLessThan(logits.maxAbsDifference(try file.floatTensor("logits")), 1e-5, "\(fixture.name): logits")
        return (model, loss, model.backward(activations, inputGradient: true)!)
    }

    /// Finite differences on a few parameters of every kind and on the input, in Float64 around the Float32
    /// model (central differences of the loss, step 1e-2 on a smooth loss).
    func testGradientsMatchFiniteDifferences() throws {
        let model = try ViTMSNForImageClassification.load(directory: TrainingFixtures.model("classifier"))
        let file = try TrainingFixtures.file("grad_classifier")
        let pixels = try file.floatTensor("pixel_values")
        let labels = ClassificationLabels.classIndices(try file.integerValues("labels"))
        var eval: NN.Dropout? = nil
        model.zeroGradients()
        let activations = try model.forwardTraining(pixelValues: pixels, labels: labels, dropout: &eval).activations
        model.backward(activations)
        func loss() throws -> Float { try model.forward(pixelValues: pixels, labels: labels).loss! }
        let step: Float = 1e-2
        var checked = 0
        let probes = ["vit.embeddings.cls_token", "vit.embeddings.position_embeddings", "vit.embeddings.patch_embeddings.projection.weight",
                      "vit.encoder.layer.0.layernorm_before.weight", "vit.encoder.layer.0.attention.attention.query.weight",
                      "vit.encoder.layer.1.attention.attention.query.bias", "vit.encoder.layer.1.attention.attention.value.weight",
                      "vit.encoder.layer.1.intermediate.dense.weight", "vit.encoder.layer.1.output.dense.bias",
                      "vit.layernorm.bias", "classifier.weight"]
        for probe in probes {
            var analytic: [Float] = []
            var numeric: [Float] = []
            for index in [0, 5, 11] {
                var gradientValue: Float = 0
                model.visitParameters { name, _, gradient in if name == probe { gradientValue = gradient!.scalars[index] } }
                func nudge(_ delta: Float) {
                    model.visitParameters { name, value, _ in
                        if name == probe { value.withUnsafeMutableBufferPointer { $0[index] += delta } }
                    }
                }
                nudge(step)
                let up = try loss()
                nudge(-2 * step)
                let down = try loss()
                nudge(step)
                analytic.append(gradientValue)
                numeric.append((up - down) / (2 * step))
            }
            let error = Tensor(shape: [3], scalars: analytic).relativeDifference(Tensor(shape: [3], scalars: numeric))
            XCTAssertLessThan(error, 2e-2, "\(probe): analytic \(analytic) vs finite differences \(numeric)")
            checked += 1
        }
        XCTAssertEqual(checked, probes.count)
    }

    /// Dropout in training mode changes the output and is reproducible from its seed; eval mode (nil) is not
    /// random; the gradient flows only through kept units.
    func testDropoutIsSeededAndEvalIsDeterministic() throws {
        var config = try ModelDirectory.config(TrainingFixtures.model("classifier"))
        config.hiddenDropoutProb = 0.3
        config.attentionProbsDropoutProb = 0.2
        let model = try ViTMSNForImageClassification.randomlyInitialized(config: config, seed: 1)
        let pixels = try TrainingFixtures.file("grad_classifier").floatTensor("pixel_values")
        let labels = ClassificationLabels.classIndices([0, 1, 2])
        func logits(seed: UInt64?) throws -> [Float] {
            var dropout = seed.map { NN.Dropout(config: config, seed: $0) }
            return try model.forwardTraining(pixelValues: pixels, labels: labels, dropout: &dropout).logits.scalars
        }
        XCTAssertEqual(try logits(seed: 3), try logits(seed: 3))
        XCTAssertNotEqual(try logits(seed: 3), try logits(seed: 4))
        XCTAssertEqual(try logits(seed: nil), try logits(seed: nil))
        XCTAssertNotEqual(try logits(seed: nil), try logits(seed: 3))
        let inference = try model.forward(pixelValues: pixels).logits
        XCTAssertLessThan(Tensor(shape: inference.shape, scalars: try logits(seed: nil)).maxAbsDifference(inference), 1e-6)
    }
}
