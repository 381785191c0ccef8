import Dispatch
import Foundation
import ViTCore
import ViTVision

/// A batch ready for the model: one transformed sample per readable image.
public struct LoadedBatch<Sample>: @unchecked Sendable {
    public var samples: [Sample]  // (B)
    public var labels: [Int64]    // (B)
    public var skipped: [String]  // why samples of this batch could not be read
}

extension LoadedBatch where Sample == Tensor {
    /// The samples stacked (B, C, H, W).
    public var pixels: Tensor { samples.isEmpty ? Tensor(zeros: [0]) : Tensor.stacked(samples) }
}

/// Batches of a dataset in a seeded order: epoch `e` is a permutation drawn from (seed, e), and sample `i` of
/// epoch `e` is transformed with its own generator (seed, e, i), so a run resumed at any batch sees exactly
/// what an uninterrupted one would. The next batch is prepared on a background queue while the caller
/// computes, its samples decoded in parallel. A sample is whatever the transform makes of an image: pixel
/// values for fine-tuning, the list of views for MSN.
public final class BatchLoader<Sample>: @unchecked Sendable {
    public typealias Transform = @Sendable (Image, inout SeededGenerator) -> Sample

    public let dataset: LabeledImages
    public let batchSize: Int
    let shuffle: Bool
    let seed: UInt64
    let transform: Transform

    public init(dataset: LabeledImages, batchSize: Int, shuffle: Bool, seed: UInt64, transform: @escaping Transform) {
        precondition(batchSize > 0, "batch size must be positive")
        (self.dataset, self.batchSize, self.shuffle, self.seed, self.transform) = (dataset, batchSize, shuffle, seed, transform)
    }

    public var batchesPerEpoch: Int { (dataset.count + batchSize - 1) / batchSize }

    /// The sample order of `epoch`.
    public func order(epoch: Int) -> [Int] {
        guard shuffle else { return Array(0..<dataset.count) }
        var generator = SeededGenerator(seed: seed, epoch)
        return Array(0..<dataset.count).shuffled(using: &generator)
    }

    /// Batches `first..<batchesPerEpoch` of `epoch`, each prepared while the previous one is used (the
    /// pipelines' `Prefetched`, so training and inference overlap decoding with compute the same way).
    public func batches(epoch: Int, from first: Int = 0) -> AnyIterator<LoadedBatch<Sample>> {
        let order = order(epoch: epoch)
        let count = max(0, batchesPerEpoch - first)
        let prefetched = Prefetched(count: count) { i in
            let index = first + i
            return self.load(Array(order[(index * self.batchSize)..<min((index + 1) * self.batchSize, order.count)]), epoch: epoch)
        }
        var next = 0
        return AnyIterator {
            guard next < count else { return nil }
            defer { next += 1 }
            return prefetched.take(next)
        }
    }

    /// The samples at `indices`, transformed; unreadable ones are left out and reported.
    func load(_ indices: [Int], epoch: Int) -> LoadedBatch<Sample> {
        var views = [Sample?](repeating: nil, count: indices.count)
        var errors = [String?](repeating: nil, count: indices.count)
        views.withUnsafeMutableBufferPointer { viewSlots in
            errors.withUnsafeMutableBufferPointer { errorSlots in
                let (views, errors) = (UncheckedSendable(viewSlots), UncheckedSendable(errorSlots))
                DispatchQueue.concurrentPerform(iterations: indices.count) { i in
                    do {
                        var generator = SeededGenerator(seed: seed, epoch, indices[i])
                        views.value[i] = transform(try dataset.image(at: indices[i]), &generator)
                    } catch {
                        errors.value[i] = "\(error)"
                    }
                }
            }
        }
        let kept = indices.indices.filter { views[$0] != nil }
        return LoadedBatch(samples: kept.map { views[$0]! }, labels: kept.map { Int64(dataset.labels[indices[$0]]) }, skipped: errors.compactMap { $0 })
    }
}
