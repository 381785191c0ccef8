import Foundation
import ViTCore
import ViTModel
import ViTVision

/// The baselines MSN's low-shot numbers are compared with, each filling the same table on the same splits.
public enum LowShotBaselines {
    /// Raw pixels as features (N, H·W·C): each image at the model's input size and channel count
    /// (`processor`'s size, bilinear, as the evaluation transform), rescaled to [0, 1]. Images of any size and
    /// mode can be compared so; the protocol centres and normalises them as it does the encoder's features.
    public static func pixelFeatures(_ data: LabeledImages, processor: ImageProcessor, channels: Int) throws -> Tensor {
        let width = processor.width * processor.height * channels
        var values = [Float](repeating: 0, count: data.count * width)
        for row in 0..<data.count {
            let image = try data.image(at: row)
            let converted = channels == 1 ? image.convertedToGrayscale() : image.converted(toRGBWith: .drop)
            let pixels = converted.resized(width: processor.width, height: processor.height, resample: .bilinear).pixels
            for j in 0..<width { values[row * width + j] = Float(pixels[j]) / 255 }
        }
        return Tensor(shape: [data.count, width], scalars: values)
    }

    /// The same ViT trained from scratch, supervised, on the labelled images `indices` only, then used to
    /// predict `test` with the evaluation transform. AdamW (lr 1e-3, weight decay 0.05, cosine with 10 %
    /// warm-up), random resized crops of half the image or more (the fine-tuning default of 8 % leaves too
    /// little of a 28-pixel image) and flips: 60 full-batch steps on up to 128 images (the k-shot sets),
    /// otherwise batches of 128 for two epochs or `minimumImages`, whichever is more (the 1 % set: 50 epochs).
    public static func supervisedFromScratch(
        config: ViTMSNConfig, processor: ImageProcessor, train: LabeledImages, test: LabeledImages,
        indices: [Int], seed: Int, minimumImages: Int = 30_000, parallelism: Parallelism = Parallelism()
    ) throws -> [Int] {
        var config = config
        config.id2label = Dictionary(uniqueKeysWithValues: train.classNames.enumerated().map { ($0, $1) })
        config.label2id = Dictionary(uniqueKeysWithValues: train.classNames.enumerated().map { ($1, $0) })
        let model = try ViTMSNForImageClassification.randomlyInitialized(config: config, seed: UInt64(seed))
        model.vit.parallelism = parallelism
        model.zeroGradients()
        let batchSize = min(indices.count, 128)
        let steps = indices.count <= 128 ? 60 : max(2 * indices.count, minimumImages) / batchSize
        let batchesPerEpoch = indices.count / batchSize
        var augmentation = TrainingAugmentation(processor: processor)
        augmentation.scale = 0.5...1
        let optimizer = AdamW()
        let settings = OptimizationSettings(learningRate: 1e-3, weightDecay: 0.05, schedule: .cosine, warmupSteps: steps / 10, totalSteps: steps)
        var eval: NN.Dropout? = nil
        var order = indices
        for step in 0..<steps {
            let (epoch, position) = step.quotientAndRemainder(dividingBy: batchesPerEpoch)
            if position == 0, batchesPerEpoch > 1 {
                var generator = SeededGenerator(seed: UInt64(seed), epoch, -3)
                order = indices.shuffled(using: &generator)
            }
            let batch = order[(position * batchSize)..<((position + 1) * batchSize)]
            let pixels = Tensor.stacked(try batch.map { i in
                var generator = SeededGenerator(seed: UInt64(seed), step, i)
                return augmentation.pixelValues(try train.image(at: i), using: &generator)
            })
            let labels = batch.map { Int64(train.labels[$0]) }
            _ = try optimizerStep(model, optimizer: optimizer, microBatches: [(pixels, labels)], settings: settings, dropout: &eval)
        }
        var predictions: [Int] = []
        for first in stride(from: 0, to: test.count, by: 512) {
            let pixels = Tensor.stacked(try (first..<min(first + 512, test.count)).map { processor.evaluationPixelValues(try test.image(at: $0)) })
            predictions += argmaxRows(try model.forward(pixelValues: pixels).logits)
        }
        return predictions
    }
}
