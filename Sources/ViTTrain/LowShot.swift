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
    /// Which feature of the frozen encoder to use.
    public enum Feature: String, CaseIterable, Sendable {
        case preNorm = "cls-prenorm"             // the CLS token out of the last block (the official evaluation)
        case cls                                 // the CLS token after the final LayerNorm (Transformers' last_hidden_state)
        case clsAndPatchMean = "cls+patch-mean"  // `cls` beside the mean of the normed patch tokens (DINO's linear evaluation)
        case clsAndPatchGrid = "cls+patch-grid"  // `cls` beside the normed patch tokens pooled to at most 4 × 4 cells, each part of unit length

        /// The width of one image's feature for an encoder of this configuration.
        func width(_ config: ViTMSNConfig) -> Int {
            switch self {
            case .preNorm, .cls: config.hiddenSize
            case .clsAndPatchMean: 2 * config.hiddenSize
            case .clsAndPatchGrid: (1 + LowShot.cells(config.gridHeight) * LowShot.cells(config.gridWidth)) * config.hiddenSize
            }
        }
    }

    /// Cells of the pooled patch grid along a side of `patches` patches.
    static func cells(_ patches: Int) -> Int { min(patches, 4) }

    /// Features (N, width) of the images of `data`, resized to the model's size, in batches: of every image,
    /// or only of the rows `only` (the others left zero). In a data-parallel job each rank computes a slice of
    /// the rows and every rank gets all of them (summed over the ranks, each row non-zero on one only: exact).
    public static func features(_ encoder: ViTMSNModel, data: LabeledImages, processor: ImageProcessor, feature: Feature, only: [Int]? = nil,
                                batchSize: Int = 256, communicator: Communicator = SingleProcess()) throws -> Tensor {
        let dim = feature.width(encoder.config)
        let all = only ?? Array(0..<data.count)
        let rows = Array(all[communicator.slice(of: all.count)])
        var values = [Float](repeating: 0, count: data.count * dim)
        for start in stride(from: 0, to: rows.count, by: batchSize) {
            let batch = rows[start..<min(start + batchSize, rows.count)]
            let pixels = Tensor.stacked(try batch.map { i in
                processor.evaluationPixelValues(try data.image(at: i))
            })
            let cls = try featureRows(encoder, pixels: pixels, feature: feature).scalars
            for (b, i) in batch.enumerated() {
                for j in 0..<dim { values[i * dim + j] = cls[b * dim + j] }
            }
        }
        communicator.allReduceSum(&values, label: "the features of \(all.count) images")
        return Tensor(shape: [data.count, dim], scalars: values)
    }

    /// The features (B, width) of one batch of pixel values.
    static func featureRows(_ encoder: ViTMSNModel, pixels: Tensor, feature: Feature) throws -> Tensor {
        let output = try encoder.forward(pixelValues: pixels, outputHiddenStates: feature == .preNorm)
        switch feature {
        case .preNorm: return clsTokens(output.hiddenStates!.last!)
        case .cls: return clsTokens(output.lastHiddenState)
        case .clsAndPatchMean: return clsAndPatchMean(output.lastHiddenState)
        case .clsAndPatchGrid: return clsAndPatchGrid(output.lastHiddenState, height: encoder.config.gridHeight, width: encoder.config.gridWidth)
        }
    }

    /// Of a hidden state (B, 1 + H·W, D), patches in rows of W: each image's CLS token scaled to unit length,
    /// followed by its patch tokens average-pooled to a grid of at most 4 × 4 cells (cell i of a side of n
    /// patches spans ⌊i·n/c⌋ ..< ⌈(i+1)·n/c⌉, PyTorch's adaptive pooling; a grid of 4 × 4 or less keeps every
    /// token), scaled together to unit length. The one global token weighs as much as the whole map, and the
    /// map keeps where things are, as raw pixels do.
    static func clsAndPatchGrid(_ state: Tensor, height: Int, width: Int) -> Tensor {
        let (batch, dim) = (state.shape[0], state.shape[2])
        precondition(state.shape[1] == 1 + height * width, "\(state.shape[1]) tokens for a \(height)×\(width) patch grid")
        let (rows, columns) = (cells(height), cells(width))
        let span = { (cell: Int, cells: Int, patches: Int) in (cell * patches / cells)..<(((cell + 1) * patches + cells - 1) / cells) }
        let featureWidth = (1 + rows * columns) * dim
        var feature = [Float](repeating: 0, count: batch * featureWidth)
        state.withUnsafeBufferPointer { x in
            for b in 0..<batch {
                let (tokens, row) = (x.baseAddress! + b * (1 + height * width) * dim, b * featureWidth)
                for j in 0..<dim { feature[row + j] = tokens[j] }
                for cellRow in 0..<rows {
                    for cellColumn in 0..<columns {
                        let (ys, xs) = (span(cellRow, rows, height), span(cellColumn, columns, width))
                        let cell = row + (1 + cellRow * columns + cellColumn) * dim
                        for y in ys { for x in xs { for j in 0..<dim { feature[cell + j] += tokens[(1 + y * width + x) * dim + j] } } }
                        for j in 0..<dim { feature[cell + j] /= Float(ys.count * xs.count) }
                    }
                }
                for part in [row..<(row + dim), (row + dim)..<(row + featureWidth)] {
                    let norm = max(feature[part].reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
                    for i in part { feature[i] /= norm }
                }
            }
        }
        return Tensor(shape: [batch, featureWidth], scalars: feature)
    }

    /// Of a hidden state (B, 1 + P, D): each image's CLS token followed by the mean of its P patch tokens, (B, 2D).
    static func clsAndPatchMean(_ state: Tensor) -> Tensor {
        let (batch, sequence, dim) = (state.shape[0], state.shape[1], state.shape[2])
        var joined = [Float](repeating: 0, count: batch * 2 * dim)
        state.withUnsafeBufferPointer { x in
            for b in 0..<batch {
                let (tokens, row) = (x.baseAddress! + b * sequence * dim, b * 2 * dim)
                for j in 0..<dim { joined[row + j] = tokens[j] }
                for t in 1..<sequence { for j in 0..<dim { joined[row + dim + j] += tokens[t * dim + j] } }
                for j in 0..<dim { joined[row + dim + j] /= Float(sequence - 1) }
            }
        }
        return Tensor(shape: [batch, 2 * dim], scalars: joined)
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

    /// A seeded split of `count` training images into nine tenths to fit and a tenth held out, for choosing
    /// settings (the probe's λ, a feature) without the test set.
    public static func heldOutTenth(count: Int) -> (fitted: [Int], heldOut: [Int]) {
        var generator = SeededGenerator(seed: 0, -11)
        let order = Array(0..<count).shuffled(using: &generator)
        return (Array(order.dropFirst(count / 10)), Array(order.prefix(count / 10)))
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
/// `tolerance` (scikit-learn's criterion) or until no step decreases it at the products' precision. The
/// iterate, the softmax and the loss are double precision; on large problems the two products with the
/// features (scores X·Wᵀ and the gradient Xᵀ·G) run on the float GEMM, not in scalar double loops.
public struct LogisticRegression {
    public let weights: Tensor // (classes, D)
    public private(set) var iterations = 0
    /// Whether the gradient criterion was met (rather than the iteration limit or the float products' precision).
    public private(set) var converged = false
    /// Objective evaluations, the line searches' included.
    public private(set) var evaluations = 1

    public init(features x: Tensor, labels: [Int], classes: Int, lambda: Double, tolerance: Double = 1e-6, maxIterations: Int = 500,
                startingFrom initial: Tensor? = nil, parallelism: Parallelism = Parallelism()) {
        let objective = SoftmaxObjective(x: x, labels: labels, classes: classes, lambda: lambda, parallelism: parallelism)
        var w = initial?.scalars.map(Double.init) ?? [Double](repeating: 0, count: classes * x.shape[1])
        var (f, g) = objective.valueAndGradient(w)
        var history: [(s: [Double], y: [Double], rho: Double)] = []
        while iterations < maxIterations {
            if g.lazy.map(abs).max()! <= tolerance { converged = true; break }
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
            var decreased = false
            while step >= 1e-10 {
                for i in w.indices { candidate[i] = w[i] + step * direction[i] }
                (value, gradient) = objective.valueAndGradient(candidate)
                evaluations += 1
                if value <= f + 1e-4 * step * slope { decreased = true; break }
                step *= 0.5
            }
            // No sufficient decrease along a descent direction: the float products' precision is reached.
            guard decreased else { break }
            let s = zip(candidate, w).map { $0 - $1 }, y = zip(gradient, g).map { $0 - $1 }
            let sy = dot(s, y)
            if sy > 1e-16 * dot(y, y) {
                history.append((s, y, 1 / sy))
                if history.count > 10 { history.removeFirst() }
            }
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

/// `Σ_i CE(softmax(W x_i), y_i) + (λ/2)‖W‖²` and its gradient, W (classes, D) row-major. Small problems (the
/// k-shot and 1 % sets) take the products in double precision, so they reach scikit-learn's minimiser to its
/// tolerance; large ones (the linear probe) on the float GEMM, whose precision is ample for them.
struct SoftmaxObjective {
    let x: Tensor // (N, D)
    let labels: [Int]
    let n: Int, d: Int, classes: Int
    let lambda: Double
    let parallelism: Parallelism
    let exact: [Double]? // x in double, for small problems

    init(x: Tensor, labels: [Int], classes: Int, lambda: Double, parallelism: Parallelism) {
        (self.x, self.labels, self.lambda, self.parallelism) = (x, labels, lambda, parallelism)
        (n, d, self.classes) = (x.shape[0], x.shape[1], classes)
        exact = n * d * classes <= 1 << 22 ? x.scalars.map(Double.init) : nil
    }

    func valueAndGradient(_ w: [Double]) -> (Double, [Double]) {
        // Scores X·Wᵀ (N, C), then each row's softmax minus its one-hot label in their place.
        var scores = exact.map { x in (0..<(n * classes)).map { k in
            let (i, c) = k.quotientAndRemainder(dividingBy: classes)
            return (0..<d).reduce(0.0) { $0 + x[i * d + $1] * w[c * d + $1] }
        } } ?? products(x, Tensor(shape: [classes, d], scalars: w.map(Float.init)), parallelism: parallelism).map(Double.init)
        var loss = 0.0
        for i in 0..<n {
            let row = (i * classes)..<((i + 1) * classes)
            let maximum = scores[row].max()!
            var total = 0.0
            for k in row { scores[k] = Foundation.exp(scores[k] - maximum); total += scores[k] }
            loss += Foundation.log(total) - Foundation.log(scores[i * classes + labels[i]])
            for k in row { scores[k] /= total }
            scores[i * classes + labels[i]] -= 1
        }
        // λW + Gᵀ·X (C, D).
        var gradient = w.map { $0 * lambda }
        if let x = exact {
            for i in 0..<n { for c in 0..<classes { for j in 0..<d { gradient[c * d + j] += scores[i * classes + c] * x[i * d + j] } } }
        } else {
            let coefficients = scores.map(Float.init)
            var transposed = [Float](repeating: 0, count: d * classes) // Xᵀ·G (D, C)
            x.withUnsafeBufferPointer { x in
                coefficients.withUnsafeBufferPointer { g in
                    transposed.withUnsafeMutableBufferPointer { out in
                        gemm(transposeA: true, transposeB: false, m: d, n: classes, k: n, a: x.baseAddress!, lda: d,
                             b: g.baseAddress!, ldb: classes, c: out.baseAddress!, ldc: classes, parallelism: parallelism)
                    }
                }
            }
            for c in 0..<classes { for j in 0..<d { gradient[c * d + j] += Double(transposed[j * classes + c]) } }
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
func products(_ x: Tensor, _ y: Tensor, parallelism: Parallelism = Parallelism()) -> [Float] {
    let (m, n, d) = (x.shape[0], y.shape[0], x.shape[1])
    var result = [Float](repeating: 0, count: m * n)
    x.withUnsafeBufferPointer { a in
        y.withUnsafeBufferPointer { b in
            result.withUnsafeMutableBufferPointer { c in
                gemm(transposeA: false, transposeB: true, m: m, n: n, k: d, a: a.baseAddress!, lda: d, b: b.baseAddress!, ldb: d, c: c.baseAddress!, ldc: n, parallelism: parallelism)
            }
        }
    }
    return result
}

/// The index of the largest score of each row of x · yᵀ.
func argmaxRows(_ x: Tensor, times y: Tensor) -> [Int] {
    argmaxRows(Tensor(shape: [x.shape[0], y.shape[0]], scalars: products(x, y)))
}

/// The index of the largest value of each row of a matrix (N, C).
func argmaxRows(_ scores: Tensor) -> [Int] {
    let n = scores.shape[1]
    return scores.withUnsafeBufferPointer { s in (0..<scores.shape[0]).map { i in (0..<n).max { s[i * n + $0] < s[i * n + $1] }! } }
}

package func accuracy(_ predictions: [Int], _ labels: [Int]) -> Double {
    Double(zip(predictions, labels).filter { $0 == $1 }.count) / Double(max(labels.count, 1))
}

/// One row of a low-shot table: the accuracy on each split, their mean and spread, and how it was obtained.
public struct LowShotRow: Sendable {
    public let name: String
    public let accuracies: [Double]
    public var note: String? = nil
    public var mean: Double { ViTTrain.mean(accuracies) }
    public var standardDeviation: Double { ViTTrain.standardDeviation(accuracies) }
}

/// The paper's low-shot table on a labelled train/test pair: k images per class over seeded splits (mean ±
/// std), optionally a 1 % split, all the labels, and k-NN (k = 20) on all the labels. Any classifier fills the
/// table through `evaluate(trainLabels:testLabels:classes:classify:)`; frozen features get logistic regression
/// (λ fixed, as the paper, on the small sets; chosen on held-out images for all the labels) and k-NN.
public struct LowShotProtocol: Sendable {
    public var shots = [1, 2, 5]
    public var splits = 3
    public var lambda = 0.0025
    public var onePercent = true
    public var allLabels = true
    public var nearestNeighbours = true
    /// The linear probe's candidate λ per training image (λ/N), tried on a seeded held-out tenth of the set.
    public var probeLambdas = [1e-4, 1e-5, 1e-6, 1e-7]

    public static let allLabelsRow = "all labels"
    public static let nearestNeighboursRow = "k-NN (k = 20, all labels)"

    public init() {}

    /// The training images the protocol reads: those of its splits, or nil for all of them (k-NN and the
    /// linear probe use every label). Features of the other rows may be left zero.
    public func trainingIndices(labels: [Int], classes: Int) -> [Int]? {
        if nearestNeighbours || allLabels { return nil }
        return Set(labelledSets(labels: labels, classes: classes).flatMap { $0.splits.joined() }).sorted()
    }

    /// The labelled training subsets of the rows, in order: k per class on each split, the 1 % split, all.
    public func labelledSets(labels: [Int], classes: Int) -> [(name: String, splits: [[Int]])] {
        var sets = shots.map { k in ("\(k) per class", (0..<splits).map { LowShot.shotIndices(labels: labels, classes: classes, shots: k, split: $0) }) }
        if onePercent {
            let perClass = max(1, labels.count / classes / 100)
            sets.append(("1 % (\(perClass) per class)", [LowShot.shotIndices(labels: labels, classes: classes, shots: perClass, split: 100)]))
        }
        if allLabels { sets.append((Self.allLabelsRow, [Array(labels.indices)])) }
        return sets
    }

    /// The table of any classifier: `classify(row, indices)` trains on those training images and predicts the
    /// test set.
    public func evaluate(trainLabels: [Int], testLabels: [Int], classes: Int, classify: (_ row: String, _ indices: [Int]) throws -> [Int]) rethrows -> [LowShotRow] {
        try labelledSets(labels: trainLabels, classes: classes).map { name, splits in
            LowShotRow(name: name, accuracies: try splits.map { accuracy(try classify(name, $0), testLabels) })
        }
    }

    /// The table of frozen features (N, D), each row centred and L2-normalised first.
    public func evaluate(train: Tensor, trainLabels: [Int], test: Tensor, testLabels: [Int], classes: Int) -> [LowShotRow] {
        let testFeatures = LowShot.centredAndNormalised(test)
        let trainFeatures = LowShot.centredAndNormalised(train)
        var probe: (model: LogisticRegression, lambda: Double)?
        var rows = evaluate(trainLabels: trainLabels, testLabels: testLabels, classes: classes) { row, indices in
            if row == Self.allLabelsRow {
                probe = linearProbe(trainFeatures, labels: trainLabels, classes: classes)
                return probe!.model.predict(testFeatures)
            }
            let model = LogisticRegression(features: trainFeatures.gatheredRows(indices), labels: indices.map { trainLabels[$0] }, classes: classes, lambda: lambda)
            return model.predict(testFeatures)
        }
        if let probe, let last = rows.indices.last {
            rows[last].note = String(format: "linear probe: λ = %g per image, chosen on a held-out tenth of the training set; %d L-BFGS iterations (%d evaluations)%@",
                                     probe.lambda, probe.model.iterations, probe.model.evaluations, probe.model.converged ? ", converged" : ", not converged")
        }
        if nearestNeighbours {
            let predictions = nearestNeighbourPredictions(train: trainFeatures, labels: trainLabels, classes: classes, test: testFeatures)
            rows.append(LowShotRow(name: Self.nearestNeighboursRow, accuracies: [accuracy(predictions, testLabels)]))
        }
        return rows
    }

    /// Logistic regression on every labelled image, with λ chosen honestly: each candidate of `probeLambdas`
    /// fitted (largest first, each warm-started from the last) on a seeded nine tenths of the training set and
    /// scored on the other tenth, then the best refitted on all of it. Run until the largest gradient entry of
    /// the mean loss is below 1e-5.
    public func linearProbe(_ x: Tensor, labels: [Int], classes: Int) -> (model: LogisticRegression, lambda: Double) {
        let (fitted, heldOut) = LowShot.heldOutTenth(count: labels.count)
        let (fitX, heldOutX) = (x.gatheredRows(fitted), x.gatheredRows(heldOut))
        func fit(_ x: Tensor, _ labels: [Int], _ perImage: Double, from start: Tensor?) -> LogisticRegression {
            LogisticRegression(features: x, labels: labels, classes: classes, lambda: perImage * Double(labels.count),
                               tolerance: 1e-5 * Double(labels.count), maxIterations: 1000, startingFrom: start)
        }
        var best: (score: Double, lambda: Double, model: LogisticRegression)?
        var start: Tensor?
        for candidate in probeLambdas.sorted(by: >) {
            let model = fit(fitX, fitted.map { labels[$0] }, candidate, from: start)
            start = model.weights
            let score = accuracy(model.predict(heldOutX), heldOut.map { labels[$0] })
            if best == nil || score > best!.score { best = (score, candidate, model) }
        }
        return (fit(x, labels, best!.lambda, from: best!.model.weights), best!.lambda)
    }
}

extension Tensor {
    /// The rows `indices` of a matrix (N, D), in that order.
    package func gatheredRows(_ indices: [Int]) -> Tensor {
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
