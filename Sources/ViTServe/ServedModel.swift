import Foundation
import ViTMSN

/// What a request can ask a model for, per image.
public enum OutputName: String, CaseIterable, Sendable {
    case logits             // (num_labels), classifiers only
    case probabilities      // (num_labels): logits through Transformers' pipeline function (softmax or sigmoid)
    case lastHiddenState = "last_hidden_state" // (S, D), after the final LayerNorm
    case embedding          // (D): the pooled last hidden state
}

/// One image's outputs, each a flat Float32 row of its output's per-image shape.
typealias ImageOutputs = [OutputName: [Float]]

/// A model as the server runs it: the checkpoint, its processor, and what it can output.
public final class ServedModel: @unchecked Sendable { // immutable after init; the model's forward is thread-safe
    public let name: String
    public let model: AnyViTMSN
    public let processor: ImageProcessor
    public let pooling: Pooling
    let function: ClassificationFunction

    public init(name: String, model: AnyViTMSN, processor: ImageProcessor, pooling: Pooling = .cls) {
        (self.name, self.model, self.processor, self.pooling) = (name, model, processor, pooling)
        function = .default(for: model.backbone.config)
    }

    /// A model directory or a Hub model id (in the local cache), with its `preprocessor_config.json` or the
    /// defaults for its image size.
    public convenience init(name: String, model reference: String, precision: WeightPrecision = .f32, parallelism: Parallelism,
                            pooling: Pooling = .cls, warn: @escaping (String) -> Void) throws {
        let directory = try HubCache().resolve(reference, revision: nil)
        let model = try AnyViTMSN.load(directory: directory, precision: precision, warn: warn)
        model.backbone.parallelism = parallelism
        self.init(name: name, model: model, processor: try ImageProcessor.load(modelDirectory: directory, orDefaultFor: model.backbone.config),
                  pooling: pooling)
    }

    var config: ViTMSNConfig { model.backbone.config }

    var classifier: ViTMSNForImageClassification? {
        if case .imageClassification(let classifier) = model, classifier.config.numLabels > 0 { return classifier }
        return nil
    }

    /// The outputs this model has, and what a request that names none gets.
    var outputs: [OutputName] { classifier == nil ? [.lastHiddenState, .embedding] : OutputName.allCases }
    var defaultOutputs: [OutputName] { classifier == nil ? [.embedding] : [.logits, .probabilities] }

    /// `pixel_values` as the model takes them: (C, H, W) of every image.
    var inputShape: [Int] { [config.numChannels, processor.height, processor.width] }

    /// The per-image shape of an output.
    func shape(of output: OutputName, sequence: Int? = nil) -> [Int] {
        switch output {
        case .logits, .probabilities: return [config.numLabels]
        case .embedding: return [config.hiddenSize]
        case .lastHiddenState:
            let patches = (inputShape[1] / config.patchSize.height) * (inputShape[2] / config.patchSize.width)
            return [sequence ?? patches + 1, config.hiddenSize]
        }
    }

    /// One forward over `pixels` (B, C, H, W): the requested outputs of each image.
    func run(_ pixels: Tensor, outputs wanted: Set<OutputName>) throws -> [ImageOutputs] {
        let hidden = try model.backbone.forward(pixelValues: pixels).lastHiddenState // (B, S, D)
        let (batch, sequence, dim) = (hidden.shape[0], hidden.shape[1], hidden.shape[2])
        var results = [ImageOutputs](repeating: [:], count: batch)
        if wanted.contains(.lastHiddenState) {
            hidden.withUnsafeBufferPointer { values in
                for b in 0..<batch { results[b][.lastHiddenState] = Array(values[(b * sequence * dim)..<((b + 1) * sequence * dim)]) }
            }
        }
        if wanted.contains(.embedding) {
            for (b, vector) in ImageFeatureExtractionPipeline.pool(hidden, pooling).enumerated() { results[b][.embedding] = vector }
        }
        if let classifier, !wanted.isDisjoint(with: [.logits, .probabilities]) {
            let logits = classifier.classify(hidden).logits.scalars
            let labels = config.numLabels
            for b in 0..<batch {
                let row = Array(logits[(b * labels)..<((b + 1) * labels)])
                if wanted.contains(.logits) { results[b][.logits] = row }
                if wanted.contains(.probabilities) { results[b][.probabilities] = function.scores(row) }
            }
        }
        return results
    }
}
