import Foundation
import ViTCore
import ViTDistributed
import ViTModel
import ViTVision

/// Low-shot evaluation as the MSN paper runs it (`logistic_eval.py`): frozen encoder, one CLS feature per
/// image (before the final LayerNorm, as the official code takes it, or after it), each feature centred over
/// its own dimensions and L2-normalised (cyanure's `preprocess`), then L2-regularised multinomial logistic
/// regression without intercept minimising `Σ CE + (λ/2)‖W‖²`.
public enum LowShot {
    /// Which CLS feature to use.
    public enum Feature: String, CaseIterable, Sendable {
        case preNorm = "cls-prenorm"  // output of the last block (the official evaluation)
        case cls                      // after the final LayerNorm (Transformers' last_hidden_state)
    }

    /// CLS features (N, D) of the images of `data`, resized to the model's size, in batches: of every image,
    /// or only of the rows `only` (the others left zero). In a data-parallel job each rank computes a slice of
    /// the rows and every rank gets all of them (summed over the ranks, each row non-zero on one only: exact).
    public static func features(_ encoder: ViTMSNModel, data: LabeledImages, processor: ImageProcessor, feature: Feature, only: [Int]? = nil,
                                batchSize: Int = 256, communicator: Communicator = SingleProcess()) throws -> Tensor {
        let dim = encoder.config.hiddenSize
        let all = only ?? Array(0..<data.count)
        let rows = Array(all[communicator.slice(of: all.count)])
        var values = [Float](repeating: 0, count: data.count * dim)
        for start in stride(from: 0, to: rows.count, by: batchSize) {
            let batch = rows[start..<min(start + batchSize, rows.count)]
            let pixels = Tensor.stacked(try batch.map { i in
                processor.evaluationPixelValues(try data.image(at: i))
            })
            let output = try encoder.forward(pixelValues: pixels, outputHiddenStates: feature == .preNorm)
            let cls = clsTokens(feature == .preNorm ? output.hiddenStates!.last! : output.lastHiddenState).scalars
            for (b, i) in batch.enumerated() {
                for j in 0..<dim { values[i * dim + j] = cls[b * dim + j] }
            }
        }
        communicator.allReduceSum(&values, label: "the features of \(all.count) images")
        return Tensor(shape: [data.count, dim], scalars: values)
    }

    /// A quick probe for pretraining runs: 1- and 5-shot logistic regression (split 0) on `testCount` test
    /// images, pre-norm CLS features (extracted in shards across the ranks of a data-parallel job).
    public static func probe(train: LabeledImages, test: LabeledImages, processor: ImageProcessor, testCount: Int = 2000,
                             communicator: Communicator = SingleProcess()) -> (ViTMSNModel) throws -> [(String, Double)] {
        let classes = train.classNames.count
        let fiveShot = shotIndices(labels: train.labels, classes: classes, shots: 5, split: 0)
        let oneShot = shotIndices(labels: train.labels, classes: classes, shots: 1, split: 0)
        let testSubset = Subset(test, indices: Array(0..<min(testCount, test.count)))
        return { encoder in
            let trainFeatures = centredAndNormalised(try features(encoder, data: Subset(train, indices: fiveShot), processor: processor, feature: .preNorm, communicator: communicator))
            let testFeatures = centredAndNormalised(try features(encoder, data: testSubset, processor: processor, feature: .preNorm, communicator: communicator))
            return [("1-shot", oneShot), ("5-shot", fiveShot)].map { name, indices in
                let x = trainFeatures.gatheredRows(indices.map { fiveShot.firstIndex(of: $0)! })
                let model = LogisticRegression(features: x, labels: indices.map { train.labels[$0] }, classes: classes, lambda: 0.0025)
                return (name, accuracy(model.predict(testFeatures), testSubset.labels))
            }
        }
    }

    /// cyanure's `preprocess(centering: true, normalize: true, columns: false)`: each row minus its mean, then
    /// divided by its L2 norm.
    public static func centredAndNormalised(_ x: Tensor) -> Tensor {
        let width = x.shape[1]
        var values = x.scalars
        for r in 0..<x.shape[0] {
            let row = (r * width)..<((r + 1) * width)
            let mean = values[row].reduce(0, +) / Float(width)
            for i in row { values[i] -= mean }
            let norm = max(values[row].reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
            for i in row { values[i] /= norm }
        }
        return Tensor(shape: x.shape, scalars: values)
    }

    /// The per-class sample indices of split `split`: for each class, a seeded permutation of its images, of
    /// which the first `shots` are taken (so splits are nested: 1 ⊂ 2 ⊂ 5 shots).
    public static func shotIndices(labels: [Int], classes: Int, shots: Int, split: Int, seed: UInt64 = 0) -> [Int] {
        (0..<classes).flatMap { c -> [Int] in
            var generator = SeededGenerator(seed: seed, split, c)
            return Array(labels.indices.filter { labels[$0] == c }.shuffled(using: &generator).prefix(shots))
        }
    }
}

/// L2-regularised multinomial logistic regression without intercept, minimising
/// `Σ_i CE(softmax(W x_i), y_i) + (λ/2)‖W‖²` (the objective of MSN's cyanure call, up to the 1/N scale) by
/// L-BFGS (memory 10) with an Armijo backtracking line search, until the largest gradient entry is below
/// `tolerance` (scikit-learn's criterion). Double precision throughout, so it converges as far as asked.
public struct LogisticRegression {
    public let weights: Tensor // (classes, D)
    public private(set) var iterations = 0

    public init(features x: Tensor, labels: [Int], classes: Int, lambda: Double, tolerance: Double = 1e-6, maxIterations: Int = 500) {
        let objective = SoftmaxObjective(x: x, labels: labels, classes: classes, lambda: lambda)
        var w = [Double](repeating: 0, count: classes * x.shape[1])
        var (f, g) = objective.valueAndGradient(w)
        var history: [(s: [Double], y: [Double], rho: Double)] = []
        while iterations < maxIterations, g.lazy.map(abs).max()! > tolerance {
            iterations += 1
            var direction = Self.inverseHessianTimes(g, history: history).map { -$0 }
            var slope = dot(direction, g)
            if slope >= 0 { // not a descent direction: restart from steepest descent
                direction = g.map { -$0 }
                slope = dot(direction, g)
                history.removeAll()
            }
            // The first step has no curvature estimate: scale it to unit length.
            var step = history.isEmpty ? min(1, 1 / dot(g, g).squareRoot()) : 1
            var candidate = w, value = f, gradient = g
            while true {
                for i in w.indices { candidate[i] = w[i] + step * direction[i] }
                (value, gradient) = objective.valueAndGradient(candidate)
                if value <= f + 1e-4 * step * slope || step < 1e-20 { break }
                step *= 0.5
            }
            let s = zip(candidate, w).map { $0 - $1 }, y = zip(gradient, g).map { $0 - $1 }
            let sy = dot(s, y)
            if sy > 1e-16 * dot(y, y) {
                history.append((s, y, 1 / sy))
                if history.count > 10 { history.removeFirst() }
            }
            if value >= f, step < 1e-20 { break } // no progress possible at this precision
            (w, f, g) = (candidate, value, gradient)
        }
        weights = Tensor(shape: [classes, x.shape[1]], scalars: w.map(Float.init))
    }

    /// The L-BFGS two-loop recursion: H·g for the inverse-Hessian estimate of `history`.
    static func inverseHessianTimes(_ g: [Double], history: [(s: [Double], y: [Double], rho: Double)]) -> [Double] {
        var q = g
        var alphas = [Double](repeating: 0, count: history.count)
        for k in history.indices.reversed() {
            alphas[k] = history[k].rho * dot(history[k].s, q)
            for i in q.indices { q[i] -= alphas[k] * history[k].y[i] }
        }
        if let last = history.last {
            let scale = 1 / (last.rho * dot(last.y, last.y))
            for i in q.indices { q[i] *= scale }
        }
        for k in history.indices {
            let beta = history[k].rho * dot(history[k].y, q)
            for i in q.indices { q[i] += (alphas[k] - beta) * history[k].s[i] }
        }
        return q
    }

    /// The most likely class of each row of `x` (N, D).
    public func predict(_ x: Tensor) -> [Int] {
        argmaxRows(x, times: weights)
    }
}

private func dot(_ a: [Double], _ b: [Double]) -> Double {
    var sum = 0.0
    for i in a.indices { sum += a[i] * b[i] }
    return sum
}

/// `Σ_i CE(softmax(W x_i), y_i) + (λ/2)‖W‖²` and its gradient, W (classes, D) row-major.
struct SoftmaxObjective {
    let x: [Double] // (N, D)
    let labels: [Int]
    let n: Int, d: Int, classes: Int
    let lambda: Double

    init(x: Tensor, labels: [Int], classes: Int, lambda: Double) {
        self.x = x.scalars.map(Double.init)
        self.labels = labels
        (n, d, self.classes) = (x.shape[0], x.shape[1], classes)
        self.lambda = lambda
    }

    func valueAndGradient(_ w: [Double]) -> (Double, [Double]) {
        var loss = 0.0
        var gradient = w.map { $0 * lambda }
        var probabilities = [Double](repeating: 0, count: classes)
        x.withUnsafeBufferPointer { x in
            w.withUnsafeBufferPointer { w in
                gradient.withUnsafeMutableBufferPointer { gradient in
                    for i in 0..<n {
                        let row = x.baseAddress! + i * d
                        for c in 0..<classes {
                            let weights = w.baseAddress! + c * d
                            var score = 0.0
                            for j in 0..<d { score += row[j] * weights[j] }
                            probabilities[c] = score
                        }
                        let maximum = probabilities.max()!
                        var total = 0.0
                        for c in 0..<classes { probabilities[c] = Foundation.exp(probabilities[c] - maximum); total += probabilities[c] }
                        loss += Foundation.log(total) - Foundation.log(probabilities[labels[i]])
                        for c in 0..<classes {
                            let coefficient = probabilities[c] / total - (c == labels[i] ? 1 : 0)
                            let target = gradient.baseAddress! + c * d
                            for j in 0..<d { target[j] += coefficient * row[j] }
                        }
                    }
                }
            }
        }
        return (loss + 0.5 * lambda * dot(w, w), gradient)
    }
}

/// k-nearest-neighbour classification by cosine similarity (rows already L2-normalised), each of the k
/// neighbours voting with weight exp(similarity / 0.07), as DINO's k-NN evaluation.
package func nearestNeighbourPredictions(train: Tensor, labels: [Int], classes: Int, test: Tensor, k: Int = 20) -> [Int] {
    let (n, m, d) = (train.shape[0], test.shape[0], test.shape[1])
    let testValues = test.scalars
    var predictions: [Int] = []
    for first in stride(from: 0, to: m, by: 512) { // similarities 512 test rows at a time
        let rows = min(512, m - first)
        let similarity = products(Tensor(shape: [rows, d], scalars: Array(testValues[(first * d)..<((first + rows) * d)])), train)
        for i in 0..<rows {
            var nearest: [(Float, Int)] = [] // the k most similar, ascending
            for j in 0..<n {
                let value = similarity[i * n + j]
                guard nearest.count < k || value > nearest[0].0 else { continue }
                let position = nearest.firstIndex { $0.0 >= value } ?? nearest.count
                nearest.insert((value, j), at: position)
                if nearest.count > k { nearest.removeFirst() }
            }
            var votes = [Float](repeating: 0, count: classes)
            for (value, j) in nearest { votes[labels[j]] += Foundation.exp(value / 0.07) }
            predictions.append(votes.indices.max { votes[$0] < votes[$1] }!)
        }
    }
    return predictions
}

/// Nearest class mean by cosine similarity (rows already normalised): the raw-pixel baseline.
package func nearestClassMeanPredictions(train: Tensor, labels: [Int], classes: Int, test: Tensor) -> [Int] {
    let d = train.shape[1]
    var means = [Float](repeating: 0, count: classes * d)
    let values = train.scalars
    for (i, label) in labels.enumerated() { for j in 0..<d { means[label * d + j] += values[i * d + j] } }
    for c in 0..<classes {
        let norm = max((0..<d).reduce(Float(0)) { $0 + means[c * d + $1] * means[c * d + $1] }.squareRoot(), 1e-12)
        for j in 0..<d { means[c * d + j] /= norm }
    }
    return argmaxRows(test, times: Tensor(shape: [classes, d], scalars: means))
}

/// x (M, D) · yᵀ (D, N) → (M·N) row-major.
func products(_ x: Tensor, _ y: Tensor) -> [Float] {
    let (m, n, d) = (x.shape[0], y.shape[0], x.shape[1])
    var result = [Float](repeating: 0, count: m * n)
    x.withUnsafeBufferPointer { a in
        y.withUnsafeBufferPointer { b in
            result.withUnsafeMutableBufferPointer { c in
                gemm(transposeA: false, transposeB: true, m: m, n: n, k: d, a: a.baseAddress!, lda: d, b: b.baseAddress!, ldb: d, c: c.baseAddress!, ldc: n)
            }
        }
    }
    return result
}

/// The index of the largest score of each row of x · yᵀ.
func argmaxRows(_ x: Tensor, times y: Tensor) -> [Int] {
    let n = y.shape[0]
    let scores = products(x, y)
    return (0..<x.shape[0]).map { i in (0..<n).max { scores[i * n + $0] < scores[i * n + $1] }! }
}

package func accuracy(_ predictions: [Int], _ labels: [Int]) -> Double {
    Double(zip(predictions, labels).filter { $0 == $1 }.count) / Double(max(labels.count, 1))
}

/// The paper's low-shot table on a labelled train/test pair: k images per class over seeded splits (mean ±
/// std), optionally a 1 % split, k-NN (k = 20) and a linear probe on all training labels.
public struct LowShotProtocol: Sendable {
    public var shots = [1, 2, 5]
    public var splits = 3
    public var lambda = 0.0025
    public var onePercent = true
    public var nearestNeighbours = true
    public var linearProbe = true

    public init() {}

    /// The training images the protocol reads: those of its splits, or nil for all of them (k-NN and the
    /// linear probe use every label). Features of the other rows may be left zero.
    public func trainingIndices(labels: [Int], classes: Int) -> [Int]? {
        if nearestNeighbours || linearProbe { return nil }
        var needed = Set<Int>()
        for k in shots { for split in 0..<splits { needed.formUnion(LowShot.shotIndices(labels: labels, classes: classes, shots: k, split: split)) } }
        if onePercent { needed.formUnion(LowShot.shotIndices(labels: labels, classes: classes, shots: onePercentShots(labels.count, classes), split: 100)) }
        return needed.sorted()
    }

    func onePercentShots(_ count: Int, _ classes: Int) -> Int { max(1, count / classes / 100) }

    /// Each row: (name, mean accuracy, std over splits, or 0).
    public func evaluate(train: Tensor, trainLabels: [Int], test: Tensor, testLabels: [Int], classes: Int) -> [(String, Double, Double)] {
        var rows: [(String, Double, Double)] = []
        let testFeatures = LowShot.centredAndNormalised(test)
        let trainFeatures = LowShot.centredAndNormalised(train)
        let subset = trainFeatures.gatheredRows
        for k in shots {
            let results = (0..<splits).map { split -> Double in
                let indices = LowShot.shotIndices(labels: trainLabels, classes: classes, shots: k, split: split)
                let model = LogisticRegression(features: subset(indices), labels: indices.map { trainLabels[$0] }, classes: classes, lambda: lambda)
                return accuracy(model.predict(testFeatures), testLabels)
            }
            rows.append(("\(k) per class", mean(results), standardDeviation(results)))
        }
        if onePercent {
            let perClass = onePercentShots(trainLabels.count, classes)
            let indices = LowShot.shotIndices(labels: trainLabels, classes: classes, shots: perClass, split: 100)
            let model = LogisticRegression(features: subset(indices), labels: indices.map { trainLabels[$0] }, classes: classes, lambda: lambda)
            rows.append(("1 % (\(perClass) per class)", accuracy(model.predict(testFeatures), testLabels), 0))
        }
        if nearestNeighbours {
            rows.append(("k-NN (k = 20, all labels)", accuracy(nearestNeighbourPredictions(train: trainFeatures, labels: trainLabels, classes: classes, test: testFeatures), testLabels), 0))
        }
        if linearProbe {
            let model = LogisticRegression(features: trainFeatures, labels: trainLabels, classes: classes, lambda: lambda * Double(trainLabels.count) / 100, tolerance: 1e-3, maxIterations: 200)
            rows.append(("linear probe (all labels)", accuracy(model.predict(testFeatures), testLabels), 0))
        }
        return rows
    }
}

extension Tensor {
    /// The rows `indices` of a matrix (N, D), in that order.
    func gatheredRows(_ indices: [Int]) -> Tensor {
        let d = shape[1]
        var gathered = Tensor(zeros: [indices.count, d])
        gathered.withUnsafeMutableBufferPointer { out in
            withUnsafeBufferPointer { values in
                for (row, i) in indices.enumerated() { (out.baseAddress! + row * d).update(from: values.baseAddress! + i * d, count: d) }
            }
        }
        return gathered
    }
}

package func mean(_ x: [Double]) -> Double { x.reduce(0, +) / Double(max(x.count, 1)) }

/// The sample standard deviation (n − 1), 0 for fewer than two values.
package func standardDeviation(_ x: [Double]) -> Double {
    let m = mean(x)
    return x.count > 1 ? (x.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(x.count - 1)).squareRoot() : 0
}
