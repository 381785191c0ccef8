import Foundation
import ViTCore
import ViTModel
import ViTVision

/// The baselines MSN's low-shot numbers are compared with, on the same splits.
public enum LowShotBaselines {
    /// Raw pixels: each image at the model's input size and channel count (`processor`'s size, bilinear, as
    /// the evaluation transform), rescaled to [0, 1], centred and L2-normalised; nearest class mean by cosine.
    /// Images of any size and mode can be compared so.
    public static func rawPixels(
        train: LabeledImages, test: LabeledImages, shots: Int, split: Int, processor: ImageProcessor, channels: Int
    ) throws -> Double {
        let classes = train.classNames.count
        let indices = LowShot.shotIndices(labels: train.labels, classes: classes, shots: shots, split: split)
        func pixels(_ data: LabeledImages, _ rows: [Int]) throws -> Tensor {
            let images = try rows.map { row -> Image in
                let image = try data.image(at: row)
                let converted = channels == 1 ? image.convertedToGrayscale() : image.converted(toRGBWith: .drop)
                return converted.resized(width: processor.width, height: processor.height, resample: .bilinear)
            }
            let width = processor.width * processor.height * channels
            return LowShot.centredAndNormalised(Tensor(shape: [rows.count, width], scalars: images.flatMap { $0.pixels.map { Float($0) / 255 } }))
        }
        let predictions = nearestClassMeanPredictions(
            train: try pixels(train, indices), labels: indices.map { train.labels[$0] }, classes: classes,
            test: try pixels(test, Array(0..<test.count)))
        return accuracy(predictions, test.labels)
    }

    /// The same ViT trained from scratch, supervised, on the split's k labelled images only: AdamW (lr 1e-3,
    /// weight decay 0.05, cosine with 10 % warm-up), the fine-tuning augmentation, `steps` full-batch steps;
    /// accuracy on `test` with the evaluation transform.
    public static func supervisedFromScratch(
        config: ViTMSNConfig, processor: ImageProcessor, train: LabeledImages, test: LabeledImages,
        shots: Int, split: Int, steps: Int = 60, parallelism: Parallelism = Parallelism()
    ) throws -> Double {
        let classes = train.classNames.count
        var config = config
        config.id2label = Dictionary(uniqueKeysWithValues: train.classNames.enumerated().map { ($0, $1) })
        config.label2id = Dictionary(uniqueKeysWithValues: train.classNames.enumerated().map { ($1, $0) })
        let model = try ViTMSNForImageClassification.randomlyInitialized(config: config, seed: UInt64(split))
        model.vit.parallelism = parallelism
        model.zeroGradients()
        let indices = LowShot.shotIndices(labels: train.labels, classes: classes, shots: shots, split: split)
        let images = try indices.map { try train.image(at: $0) }
        let labels = indices.map { Int64(train.labels[$0]) }
        let augmentation = TrainingAugmentation(processor: processor)
        let optimizer = AdamW()
        let settings = OptimizationSettings(learningRate: 1e-3, weightDecay: 0.05, schedule: .cosine, warmupSteps: steps / 10, totalSteps: steps)
        var eval: NN.Dropout? = nil
        for step in 0..<steps {
            let pixels = Tensor.stacked(images.enumerated().map { i, image in
                var generator = SeededGenerator(seed: UInt64(split), step, i)
                return augmentation.pixelValues(image, using: &generator)
            })
            _ = try optimizerStep(model, optimizer: optimizer, microBatches: [(pixels, labels)], settings: settings, dropout: &eval)
        }
        var correct = 0
        for first in stride(from: 0, to: test.count, by: 512) {
            let rows = first..<min(first + 512, test.count)
            let pixels = Tensor.stacked(try rows.map { processor.evaluationPixelValues(try test.image(at: $0)) })
            correct += topOneHits(try model.forward(pixelValues: pixels).logits, labels: rows.map { Int64(test.labels[$0]) })
        }
        return Double(correct) / Double(test.count)
    }
}
