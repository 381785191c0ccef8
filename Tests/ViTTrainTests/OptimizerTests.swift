import Foundation
import ViTCore
import ViTIO
import ViTModel
import XCTest
@testable import ViTTrain

/// Tests/Fixtures/training, written by scripts/make_training_fixtures.py with torch.optim and Transformers'
/// `get_scheduler`.
enum TrainingFixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/training")

    struct OptimizerCase: Decodable {
        let name, model, kind: String
        let optimizer, scheduler: String?
        let steps, accumulation, micro_batch, warmup_steps: Int?
        let max_grad_norm, learning_rate, weight_decay, momentum: Float?
    }

    struct Manifest: Decodable {
        let optimizer_rtol: Float
        let cases: [OptimizerCase]
    }

    static func manifest() throws -> Manifest {
        try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: root.appendingPathComponent("cases.json")))
    }
}

final class OptimizerTests: XCTestCase {
    /// Ten steps (two accumulated micro-batches each, clipping, warm-up + schedule, decay groups) from the
    /// fixture's start end within `optimizer_rtol` of PyTorch's weights, at the same learning rates.
    func testTenStepsMatchTorchOptim() throws {
        let manifest = try TrainingFixtures.manifest()
        let cases = manifest.cases.filter { $0.kind == "optimizer" }
        XCTAssertEqual(Set(cases.map { $0.optimizer! }), ["adamw", "sgd"])
        for fixture in cases {
            let file = try SafetensorsFile(path: TrainingFixtures.root.appendingPathComponent("\(fixture.name).safetensors").path)
            let model = try ViTMSNForImageClassification.load(directory: TrainingFixtures.root.appendingPathComponent(fixture.model).path)
            let optimizer: Optimizer = fixture.optimizer == "adamw" ? AdamW() : SGD(momentum: fixture.momentum!)
            let settings = OptimizationSettings(
                learningRate: fixture.learning_rate!, weightDecay: fixture.weight_decay!,
                schedule: LearningRateSchedule(rawValue: fixture.scheduler!)!, warmupSteps: fixture.warmup_steps!,
                totalSteps: fixture.steps!, maxGradNorm: fixture.max_grad_norm!, accumulationSteps: fixture.accumulation!)
            let pixels = try file.floatTensor("pixel_values")
            let labels = try file.integerValues("labels")
            let imageSize = pixels.count / pixels.shape[0]
            model.zeroGradients()
            var eval: NN.Dropout? = nil
            var rates: [Float] = []
            var losses: [Float] = []
            for step in 0..<fixture.steps! {
                let microBatches = (0..<fixture.accumulation!).map { micro in
                    let first = (step * fixture.accumulation! + micro) * fixture.micro_batch!
                    let range = first..<(first + fixture.micro_batch!)
                    let values = Array(pixels.scalars[(range.lowerBound * imageSize)..<(range.upperBound * imageSize)])
                    return (pixels: Tensor(shape: [range.count] + pixels.shape.dropFirst(), scalars: values), labels: Array(labels[range]))
                }
                let report = try optimizerStep(model, optimizer: optimizer, microBatches: microBatches, settings: settings, dropout: &eval)
                rates.append(report.learningRate)
                losses.append(report.loss)
            }
            let expectedRates = try file.floatTensor("learning_rates").scalars
            for (rate, expected) in zip(rates, expectedRates) { XCTAssertEqual(rate, expected, accuracy: 1e-9, "\(fixture.name): learning rates \(rates)") }
            var worst: Float = 0
            model.visitParameters { name, value in
                let error = value.relativeDifference(try! file.floatTensor("final." + name))
                worst = max(worst, error)
                XCTAssertLessThanOrEqual(error, manifest.optimizer_rtol, "\(fixture.name): \(name)")
            }
            print("\(fixture.name): worst relative weight error after \(fixture.steps!) steps \(worst)")
        }
    }

    func testSchedulesFollowTransformers() {
        // get_scheduler(..., num_warmup_steps=2, num_training_steps=10): values at steps 0, 1, 2, 6, 10.
        let linear = [0, 0.5, 1, 0.5, 0].enumerated().map { $0 }
        for (i, expected) in linear {
            let step = [0, 1, 2, 6, 10][i]
            XCTAssertEqual(LearningRateSchedule.linear.multiplier(step: step, totalSteps: 10, warmupSteps: 2), expected, accuracy: 1e-12)
        }
        XCTAssertEqual(LearningRateSchedule.cosine.multiplier(step: 6, totalSteps: 10, warmupSteps: 2), 0.5, accuracy: 1e-12)
        XCTAssertEqual(LearningRateSchedule.constant.multiplier(step: 0, totalSteps: 10, warmupSteps: 2), 1)
        XCTAssertEqual(LearningRateSchedule.constantWithWarmup.multiplier(step: 1, totalSteps: 10, warmupSteps: 2), 0.5)
    }

    func testWeightDecayGroups() {
        XCTAssertTrue(decaysWeight("vit.encoder.layer.0.attention.attention.query.weight"))
        XCTAssertTrue(decaysWeight("classifier.weight"))
        for name in ["classifier.bias", "vit.layernorm.weight", "vit.encoder.layer.3.layernorm_after.weight", "vit.embeddings.cls_token", "vit.embeddings.position_embeddings"] {
            XCTAssertFalse(decaysWeight(name), name)
        }
    }

    func testClippingScalesToTheMaximumNorm() throws {
        let model = try ViTMSNForImageClassification.load(directory: TrainingFixtures.root.appendingPathComponent("classifier").path)
        model.zeroGradients()
        model.visitParameters { _, _, gradient in gradient!.withUnsafeMutableBufferPointer { $0.update(repeating: 3) } }
        let before = clipGradientNorm(model, maxNorm: 1)
        XCTAssertEqual(before, 3 * Float(model.parameterCount).squareRoot(), accuracy: 1e-3)
        XCTAssertEqual(clipGradientNorm(model, maxNorm: 1), 1, accuracy: 1e-5)
    }
}

