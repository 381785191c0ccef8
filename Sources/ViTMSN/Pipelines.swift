import Dispatch
import Foundation
@_exported import ViTCore
@_exported import ViTHub
import ViTIO
@_exported import ViTModel
@_exported import ViTVision

/// An image as the pipelines take it: a file, encoded bytes (JPEG, PNG, WebP, GIF, BMP, TIFF), or decoded
/// pixels. `name` is what errors call it.
public enum ImageInput: Sendable {
    case file(String)
    case encoded(Data, name: String)
    case decoded(Image, name: String)

    public var name: String {
        switch self {
        case .file(let path): path
        case .encoded(_, let name), .decoded(_, let name): name
        }
    }
}

/// How the pipelines turn encoded images into pixels: what `transformers.image_utils.load_image` does (EXIF
/// orientation applied, converted to RGB), under Pillow's pixel limit.
public struct ImageReading: Sendable {
    public var applyExifOrientation = true
    public var alpha: AlphaHandling = .drop
    public var maxPixels = ImageDecoder.defaultMaxPixels
    public var warn: @Sendable (String) -> Void = { _ in }

    public init(applyExifOrientation: Bool = true, alpha: AlphaHandling = .drop, maxPixels: Int = ImageDecoder.defaultMaxPixels,
                warn: @escaping @Sendable (String) -> Void = { _ in }) {
        (self.applyExifOrientation, self.alpha, self.maxPixels, self.warn) = (applyExifOrientation, alpha, maxPixels, warn)
    }

    /// The input as the model sees it: RGB, or one gray channel for a one-channel model.
    func image(_ input: ImageInput, channels: Int) throws -> Image {
        let decoded: Image
        switch input {
        case .file(let path):
            decoded = try ImageDecoder.decode(path: path, applyExifOrientation: applyExifOrientation, maxPixels: maxPixels, warn: warn)
        case .encoded(let data, let name):
            decoded = try ImageDecoder.decode(data: data, path: name, applyExifOrientation: applyExifOrientation, maxPixels: maxPixels, warn: warn)
        case .decoded(let image, _):
            decoded = image
        }
        return channels == 1 ? decoded.convertedToGrayscale() : decoded.converted(toRGBWith: alpha)
    }

    /// `pixel_values` (C, H, W) of every input, decoded on all cores; each slot holds the values or the error
    /// that stopped that input, so one bad image never loses the others.
    public func pixelValues(_ inputs: [ImageInput], processor: ImageProcessor, channels: Int = 3) -> [Result<Tensor, ImageError>] {
        let results = UnsafeMutableBufferPointer<Result<Tensor, ImageError>>.allocate(capacity: inputs.count)
        defer {
            _ = results.deinitialize() // every slot was initialised by its iteration
            results.deallocate()
        }
        let box = UncheckedSendable(results)
        DispatchQueue.concurrentPerform(iterations: inputs.count) { i in // each iteration fills its own slot
            let result: Result<Tensor, ImageError>
            do {
                result = .success(try processor.pixelValues(image(inputs[i], channels: channels), channels: channels))
            } catch let error as ImageError {
                result = .failure(ImageError(inputs[i].name, error.reason))
            } catch {
                result = .failure(ImageError(inputs[i].name, "\(error)"))
            }
            (box.value.baseAddress! + i).initialize(to: result)
        }
        return Array(results)
    }

    /// Runs `forward` over the inputs in batches, decoding batch i + 1 on other cores while it runs on batch i.
    /// `forward` gets the good images' pixel values stacked (B, C, H, W) and returns one output per image;
    /// an output that is not `finite` (NaN or infinite numbers, e.g. from NaN weights) is that image's error.
    func batched<Output>(
        _ inputs: [ImageInput], batchSize: Int, processor: ImageProcessor, channels: Int,
        progress: ((Int) -> Void)?, finite: (Output) -> Bool, forward: (Tensor) throws -> [Output]
    ) -> [Result<Output, ImageError>] {
        let batches = stride(from: 0, to: inputs.count, by: max(batchSize, 1)).map { $0..<min($0 + max(batchSize, 1), inputs.count) }
        let decoded = Prefetched<[Result<Tensor, ImageError>]>(count: batches.count) { i in
            pixelValues(Array(inputs[batches[i]]), processor: processor, channels: channels)
        }
        var results: [Result<Output, ImageError>] = []
        results.reserveCapacity(inputs.count)
        for (i, batch) in batches.enumerated() {
            let pixels = decoded.take(i)
            let good = pixels.compactMap { try? $0.get() }
            // One forward over the batch; without resizing (`do_resize: false`) sizes may differ, and such a
            // batch runs one image at a time so that an image the model refuses fails alone.
            let outputs: [Result<Output, Error>]
            if good.isEmpty {
                outputs = []
            } else if good.allSatisfy({ $0.shape == good[0].shape }) {
                do { outputs = try forward(Tensor.stacked(good)).map { .success($0) } } catch { outputs = good.map { _ in .failure(error) } }
            } else {
                outputs = good.map { image in Result { try forward(Tensor.stacked([image]))[0] } }
            }
            var next = outputs.makeIterator()
            for (offset, result) in pixels.enumerated() {
                switch (result, result.isSuccess ? next.next()! : nil) {
                case (.failure(let error), _): results.append(.failure(error))
                case (_, .success(let output)?) where finite(output): results.append(.success(output))
                case (_, .success?):
                    results.append(.failure(ImageError(inputs[batch.lowerBound + offset].name, "the model's output holds NaN or infinite values (are its weights finite?)")))
                case (_, .failure(let error)?): results.append(.failure(ImageError(inputs[batch.lowerBound + offset].name, "\(error)")))
                case (.success, nil): preconditionFailure("one output per readable image")
                }
            }
            progress?(batch.upperBound)
        }
        return results
    }
}

extension Result {
    var isSuccess: Bool { if case .success = self { true } else { false } }
}

/// A label with its score, as Transformers' image-classification pipeline returns them.
public struct Prediction: Codable, Equatable, Sendable {
    public let label: String
    public let score: Float

    public init(label: String, score: Float) { (self.label, self.score) = (label, score) }

    /// The `topK` best of one row of scores (at most the row's length), ties in label order, named by the
    /// config's `id2label`.
    package static func ranked(_ scores: [Float], topK: Int, config: ViTMSNConfig) -> [Prediction] {
        rankedIndices(scores, topK: topK).map { Prediction(label: config.label($0), score: scores[$0]) }
    }

    /// The indices of the `topK` best scores, best first, ties in index order.
    package static func rankedIndices(_ scores: [Float], topK: Int) -> [Int] {
        Array(scores.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }.prefix(max(0, topK)))
    }
}

extension ViTMSNConfig {
    /// Label `index` as the pipeline names it: `id2label`, or `LABEL_i`.
    package func label(_ index: Int) -> String { id2label[index] ?? "LABEL_\(index)" }
}

/// What turns logits into scores: Transformers' `ClassificationFunction`.
public enum ClassificationFunction: String, Sendable, CaseIterable {
    case sigmoid, softmax, none

    /// The pipeline's default for a model: sigmoid for multi-label models and single outputs, softmax for
    /// single-label models and several outputs (regression with several outputs included, as in Transformers).
    public static func `default`(for config: ViTMSNConfig) -> ClassificationFunction {
        if config.problemType == .multiLabelClassification || config.numLabels == 1 { return .sigmoid }
        if config.problemType == .singleLabelClassification || config.numLabels > 1 { return .softmax }
        return .none
    }

    /// Scores of one row of logits, in float32 as NumPy computes them.
    public func scores(_ logits: [Float]) -> [Float] {
        switch self {
        case .sigmoid: return logits.map { 1 / (1 + Foundation.exp(-$0)) }
        case .softmax:
            let maximum = logits.max() ?? 0
            let exps = logits.map { Foundation.exp($0 - maximum) }
            let total = exps.reduce(0, +)
            return exps.map { $0 / total }
        case .none: return logits
        }
    }
}

/// Transformers' `pipeline("image-classification")`: images in, the top labels with their scores out.
///
/// ```swift
/// let classify = try ImageClassificationPipeline(model: "facebook/vit-msn-small-finetuned")
/// let labels = try classify([.file("cat.jpg")])[0].get()   // [Prediction(label:score:)], best first
/// ```
public final class ImageClassificationPipeline {
    public let model: ViTMSNForImageClassification
    public let processor: ImageProcessor
    public var reading: ImageReading

    /// A classifier directory, or a model id in the Hugging Face cache (config, weights and
    /// `preprocessor_config.json` together).
    public convenience init(model: String, revision: String? = nil, precision: WeightPrecision = .f32, reading: ImageReading = ImageReading(),
                            parallelism: Parallelism = Parallelism()) throws {
        let directory = try HubCache().resolve(model, revision: revision)
        guard case .imageClassification(let classifier) = try AnyViTMSN.load(directory: directory, precision: precision, warn: reading.warn) else {
            throw CheckpointError(directory, "is a ViTMSNModel (no classification head): fine-tune it or give a ViTMSNForImageClassification directory")
        }
        guard classifier.config.numLabels > 0 else { throw CheckpointError(directory, "has num_labels = 0: there are no labels to rank") }
        classifier.vit.parallelism = parallelism
        self.init(model: classifier, processor: try ImageProcessor.load(modelDirectory: directory), reading: reading)
    }

    public init(model: ViTMSNForImageClassification, processor: ImageProcessor, reading: ImageReading = ImageReading()) {
        (self.model, self.processor, self.reading) = (model, processor, reading)
    }

    /// The `topK` best labels of each input (at most the model's label count), scored by `function` (by
    /// default as Transformers' pipeline chooses for this model), ties in label order; or that input's error.
    public func callAsFunction(
        _ inputs: [ImageInput], topK: Int = 5, function: ClassificationFunction? = nil, batchSize: Int = 8,
        progress: ((Int) -> Void)? = nil
    ) -> [Result<[Prediction], ImageError>] {
        let function = function ?? .default(for: model.config)
        let labels = model.config.numLabels
        return reading.batched(inputs, batchSize: batchSize, processor: processor, channels: model.config.numChannels, progress: progress,
                               finite: { $0.allSatisfy(\.score.isFinite) }) { pixels in
            let logits = try model.forward(pixelValues: pixels).logits.scalars
            return (0..<pixels.shape[0]).map { b in
                Prediction.ranked(function.scores(Array(logits[(b * labels)..<((b + 1) * labels)])), topK: topK, config: model.config)
            }
        }
    }
}

/// How an embedding is taken from the last hidden state (after the final LayerNorm).
public enum Pooling: String, Sendable, CaseIterable {
    case cls   // the CLS token, what ViTMSNForImageClassification classifies
    case mean  // the mean of the patch tokens
}

/// Image feature extraction: one vector per image from the encoder.
///
/// ```swift
/// let embed = try ImageFeatureExtractionPipeline(model: "facebook/vit-msn-small")
/// let vector = try embed([.file("cat.jpg")], normalize: true)[0].get()   // [Float], hidden_size long
/// ```
public final class ImageFeatureExtractionPipeline {
    public let model: ViTMSNModel
    public let processor: ImageProcessor
    public var reading: ImageReading

    /// A model directory (backbone or classifier) or a model id in the Hugging Face cache.
    public convenience init(model: String, revision: String? = nil, precision: WeightPrecision = .f32, reading: ImageReading = ImageReading(),
                            parallelism: Parallelism = Parallelism()) throws {
        let directory = try HubCache().resolve(model, revision: revision)
        let encoder = try AnyViTMSN.load(directory: directory, precision: precision, warn: reading.warn).backbone
        encoder.parallelism = parallelism
        self.init(model: encoder, processor: try ImageProcessor.load(modelDirectory: directory), reading: reading)
    }

    public init(model: ViTMSNModel, processor: ImageProcessor, reading: ImageReading = ImageReading()) {
        (self.model, self.processor, self.reading) = (model, processor, reading)
    }

    /// One `hidden_size` vector per input (L2-normalised with `normalize`), or that input's error.
    public func callAsFunction(
        _ inputs: [ImageInput], pooling: Pooling = .cls, normalize: Bool = false, batchSize: Int = 16,
        progress: ((Int) -> Void)? = nil
    ) -> [Result<[Float], ImageError>] {
        reading.batched(inputs, batchSize: batchSize, processor: processor, channels: model.config.numChannels, progress: progress,
                        finite: { $0.allSatisfy(\.isFinite) }) { pixels in
            let hidden = try model.forward(pixelValues: pixels).lastHiddenState
            return Self.pool(hidden, pooling).map { normalize ? Self.normalized($0) : $0 }
        }
    }

    /// (B, S, D) → B vectors of D.
    package static func pool(_ hidden: Tensor, _ pooling: Pooling) -> [[Float]] {
        let (batch, sequence, dim) = (hidden.shape[0], hidden.shape[1], hidden.shape[2])
        return hidden.withUnsafeBufferPointer { values in
            (0..<batch).map { b in
                let base = b * sequence * dim
                guard pooling == .mean, sequence > 1 else { return Array(values[base..<(base + dim)]) }
                var mean = [Float](repeating: 0, count: dim)
                for t in 1..<sequence { for d in 0..<dim { mean[d] += values[base + t * dim + d] } }
                return mean.map { $0 / Float(sequence - 1) }
            }
        }
    }

    package static func normalized(_ vector: [Float]) -> [Float] {
        let norm = vector.reduce(0) { $0 + $1 * $1 }.squareRoot()
        return norm > 0 ? vector.map { $0 / norm } : vector
    }
}

extension ImageProcessor {
    /// ViT's defaults (0.5 mean and std, bilinear) at a model's image size: what a model directory without
    /// `preprocessor_config.json` gets.
    public init(for config: ViTMSNConfig) { self.init(height: config.imageSize.height, width: config.imageSize.width) }

    /// The processor saved in `directory`, or the defaults for `config` when there is none (a malformed one is
    /// an error, not a fallback).
    public static func load(modelDirectory directory: String, orDefaultFor config: ViTMSNConfig) throws -> ImageProcessor {
        FileManager.default.fileExists(atPath: directory + "/preprocessor_config.json")
            ? try load(modelDirectory: directory) : ImageProcessor(for: config)
    }
}
