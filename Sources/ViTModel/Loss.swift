import Foundation
import ViTCore

/// Labels for `ViTMSNForImageClassification`, in the two kinds PyTorch tells apart by dtype.
public enum ClassificationLabels {
    /// Integer class indices (B) (torch long/int): single-label classification; −100 is ignored.
    case classIndices([Int64])
    /// Float targets: regression values, or multi-label 0/1 targets shaped like the logits.
    case values(Tensor)

    var asFloats: [Float] {
        switch self {
        case .classIndices(let indices): indices.map { Float($0) }
        case .values(let tensor): tensor.scalars
        }
    }

    var shape: [Int] {
        switch self {
        case .classIndices(let indices): [indices.count]
        case .values(let tensor): tensor.shape
        }
    }
}

/// `ForSequenceClassificationLoss` of Transformers 4.57: infers `problem_type` when the config has none
/// (writing it back, as Transformers does), then MSE, cross-entropy (ignore index −100) or BCE-with-logits,
/// each averaged. Returns the loss and its gradient with respect to the logits.
public func classificationLoss(logits: Tensor, labels: ClassificationLabels, config: inout ViTMSNConfig) throws -> (loss: Float, logitsGradient: Tensor) {
    let numLabels = config.numLabels
    if config.problemType == nil {
        if numLabels == 1 {
            config.problemType = .regression
        } else if case .classIndices = labels {
            config.problemType = .singleLabelClassification
        } else {
            config.problemType = .multiLabelClassification
        }
    }
    let batch = logits.shape[0]
    let x = logits.scalars
    var gradient = [Float](repeating: 0, count: x.count)
    switch config.problemType! {
    case .regression:
        // num_labels == 1 compares squeezed logits and labels; otherwise the shapes must agree.
        let y = labels.asFloats
        let squeezedLabels = labels.shape.filter { $0 != 1 }
        let squeezedLogits = logits.shape.filter { $0 != 1 }
        guard numLabels == 1 ? squeezedLabels == squeezedLogits : labels.shape == logits.shape else {
            throw ViTMSNError("regression labels of shape \(labels.shape) do not match logits of shape \(logits.shape)")
        }
        var total = 0.0
        for i in x.indices {
            let d = x[i] - y[i]
            total += Double(d * d)
            gradient[i] = 2 * d / Float(x.count)
        }
        return (Float(total / Double(x.count)), Tensor(shape: logits.shape, scalars: gradient))

    case .singleLabelClassification:
        let targets: [Int64]
        switch labels {
        case .classIndices(let indices): targets = indices
        case .values: throw ViTMSNError("single_label_classification needs integer class labels")
        }
        guard targets.count == batch else {
            throw ViTMSNError("Expected input batch_size (\(batch)) to match target batch_size (\(targets.count)).")
        }
        var total = 0.0
        let counted = targets.filter { $0 != -100 }.count
        for (b, target) in targets.enumerated() where target != -100 {
            guard (0..<Int64(numLabels)).contains(target) else { throw ViTMSNError("Target \(target) is out of bounds.") }
            let row = (b * numLabels)..<((b + 1) * numLabels)
            let maximum = x[row].max()!
            let sumExp = x[row].reduce(0.0) { $0 + exp(Double($1 - maximum)) }
            total += Double(maximum) + log(sumExp) - Double(x[row.lowerBound + Int(target)])
            // d/dx = (softmax − one-hot) / counted rows
            for i in row { gradient[i] = Float(exp(Double(x[i] - maximum)) / sumExp) / Float(counted) }
            gradient[row.lowerBound + Int(target)] -= 1 / Float(counted)
        }
        // Every label ignored: 0/0 = NaN, as PyTorch.
        return (Float(total / Double(counted)), Tensor(shape: logits.shape, scalars: gradient))

    case .multiLabelClassification:
        guard labels.shape == logits.shape else {
            throw ViTMSNError("multi-label targets of shape \(labels.shape) must match logits of shape \(logits.shape)")
        }
        let y = labels.asFloats
        var total = 0.0
        for i in x.indices {
            // max(x, 0) − x·y + log(1 + e^{−|x|}): BCE-with-logits without overflow; d/dx = σ(x) − y.
            let (v, t) = (Double(x[i]), Double(y[i]))
            total += max(v, 0) - v * t + log1p(exp(-abs(v)))
            gradient[i] = Float((1 / (1 + exp(-v)) - t) / Double(x.count))
        }
        return (Float(total / Double(x.count)), Tensor(shape: logits.shape, scalars: gradient))
    }
}
