import Foundation
import ViTCore
import ViTIO
import ViTModel
import XCTest
@testable import ViTTrain
import ViTVision

final class LowShotTests: XCTestCase {
    /// The L-BFGS solver reaches scikit-learn's minimiser of Σ CE + λ/2 ‖W‖² (multinomial, no intercept) and
    /// predicts the same classes.
    func testLogisticRegressionMatchesScikitLearn() throws {
        let root = TrainingFixtures.root.deletingLastPathComponent().appendingPathComponent("lowshot")
        let file = try SafetensorsFile(path: root.appendingPathComponent("logistic.safetensors").path)
        for (name, classes, lambda) in [("few", 5, 0.0025), ("more", 4, 0.1)] {
            let x = try file.floatTensor("\(name).x")
            let labels = try file.integerValues("\(name).labels").map(Int.init)
            let model = LogisticRegression(features: x, labels: labels, classes: classes, lambda: lambda, tolerance: 1e-8, maxIterations: 5000)
            let reference = try file.floatTensor("\(name).coef")
            XCTAssertLessThan(model.weights.relativeDifference(reference), 1e-5, name)
            XCTAssertEqual(model.predict(try file.floatTensor("\(name).test")), try file.integerValues("\(name).predictions").map(Int.init), name)
        }
    }

    func testPreprocessingCentresAndNormalisesEachRow() {
        let x = LowShot.centredAndNormalised(Tensor(shape: [2, 3], scalars: [1, 2, 3, 10, 10, 13]))
        for r in 0..<2 {
            let row = Array(x.scalars[(r * 3)..<(r * 3 + 3)])
            XCTAssertEqual(row.reduce(0, +), 0, accuracy: 1e-6)
            XCTAssertEqual(row.reduce(0) { $0 + $1 * $1 }, 1, accuracy: 1e-6)
        }
    }

    /// Splits are nested (1 ⊂ 2 ⊂ 5), balanced, and differ between split seeds.
    func testShotSplitsAreNestedAndBalanced() {
        let labels = (0..<300).map { $0 % 10 }
        let one = LowShot.shotIndices(labels: labels, classes: 10, shots: 1, split: 0)
        let five = LowShot.shotIndices(labels: labels, classes: 10, shots: 5, split: 0)
        XCTAssertTrue(Set(one).isSubset(of: Set(five)))
        XCTAssertEqual(Dictionary(grouping: five) { labels[$0] }.mapValues(\.count), Dictionary(uniqueKeysWithValues: (0..<10).map { ($0, 5) }))
        XCTAssertNotEqual(five, LowShot.shotIndices(labels: labels, classes: 10, shots: 5, split: 1))
    }

    /// On features that separate the classes, every row of the table is 100 %; without k-NN and the linear
    /// probe the protocol reads only the images of its splits.
    func testProtocolOnSeparableFeatures() {
        let classes = 3, perClass = 200
        let labels = (0..<(classes * perClass)).map { $0 % classes }
        var generator = SeededGenerator(seed: 5)
        func features(_ labels: [Int]) -> Tensor {
            Tensor(shape: [labels.count, 8], scalars: labels.flatMap { c in (0..<8).map { j in (j == c ? 3 : 0) + Float.random(in: -0.5...0.5, using: &generator) } })
        }
        let testLabels = (0..<90).map { $0 % classes }
        let rows = LowShotProtocol().evaluate(train: features(labels), trainLabels: labels, test: features(testLabels), testLabels: testLabels, classes: classes)
        XCTAssertEqual(rows.map(\.name), ["1 per class", "2 per class", "5 per class", "1 % (2 per class)", "all labels", "k-NN (k = 20, all labels)"])
        for row in rows { XCTAssertEqual(row.mean, 1, row.name) }
        XCTAssertEqual(rows.map(\.accuracies.count), [3, 3, 3, 1, 1, 1])
        XCTAssertNotNil(rows[4].note?.range(of: "converged"))
        var shotsOnly = LowShotProtocol()
        (shotsOnly.onePercent, shotsOnly.nearestNeighbours, shotsOnly.allLabels) = (false, false, false)
        XCTAssertNil(LowShotProtocol().trainingIndices(labels: labels, classes: classes))
        let needed = Set(shotsOnly.trainingIndices(labels: labels, classes: classes)!)
        XCTAssertLessThanOrEqual(needed.count, 3 * 5 * classes)
        for split in 0..<3 { XCTAssertTrue(Set(LowShot.shotIndices(labels: labels, classes: classes, shots: 5, split: split)).isSubset(of: needed)) }
    }

    /// The raw-pixel baseline takes images of any size and mode at the model's input size (it used to stop
    /// at a precondition when sizes differed), and fills every row of the table by class mean.
    func testRawPixelBaselineTakesMixedSizesAndModes() throws {
        // Class 0 brightens left to right, class 1 top to bottom, at every size and in either mode.
        func image(_ width: Int, _ height: Int, _ mode: Image.Mode, vertical: Bool) -> Image {
            let pixels = (0..<(width * height)).flatMap { i -> [UInt8] in
                let (x, y) = (i % width, i / width)
                let value = UInt8(255 * (vertical ? y : x) / max((vertical ? height : width) - 1, 1))
                return [UInt8](repeating: value, count: mode.channels)
            }
            return Image(width: width, height: height, mode: mode, pixels: pixels)
        }
        let train = ImagesInMemory(classNames: ["across", "down"], labels: [0, 1, 0, 1], images: [
            image(20, 30, .RGB, vertical: false), image(28, 28, .L, vertical: true), image(9, 5, .L, vertical: false), image(64, 48, .RGB, vertical: true),
        ])
        let test = ImagesInMemory(classNames: ["across", "down"], labels: [0, 1], images: [image(33, 17, .RGB, vertical: false), image(12, 40, .L, vertical: true)])
        var settings = LowShotProtocol()
        (settings.shots, settings.splits, settings.nearestNeighbours) = ([1], 2, false)
        for channels in [1, 3] {
            let processor = ImageProcessor(height: 16, width: 16)
            let (x, y) = try (LowShotBaselines.pixelFeatures(train, processor: processor, channels: channels), LowShotBaselines.pixelFeatures(test, processor: processor, channels: channels))
            XCTAssertEqual(x.shape, [4, 16 * 16 * channels])
            let (trainPixels, testPixels) = (LowShot.centredAndNormalised(x), LowShot.centredAndNormalised(y))
            let rows = settings.evaluate(trainLabels: train.labels, testLabels: test.labels, classes: 2) { _, indices in
                nearestClassMeanPredictions(train: trainPixels.gatheredRows(indices), labels: indices.map { train.labels[$0] }, classes: 2, test: testPixels)
            }
            XCTAssertEqual(rows.map(\.name), ["1 per class", "1 % (1 per class)", "all labels"])
            for row in rows { XCTAssertEqual(row.mean, 1, "\(channels) channels, \(row.name)") }
        }
    }

    /// The linear probe's λ is one of its candidates, picked without the test set, and the refit on all the
    /// training images is the minimiser at that λ (a cold start run to a tight tolerance lands on it).
    func testLinearProbeRefitsTheHeldOutChoiceToConvergence() {
        var generator = SeededGenerator(seed: 9)
        let (n, d, classes) = (400, 12, 3)
        let x = Tensor(shape: [n, d], scalars: (0..<(n * d)).map { _ in Float.random(in: -1...1, using: &generator) })
        let labels = (0..<n).map { i -> Int in // a noisy linear rule
            let scores = (0..<classes).map { c in x.scalars[i * d + c] + x.scalars[i * d + c + 3] + Float.random(in: -0.6...0.6, using: &generator) }
            return scores.indices.max { scores[$0] < scores[$1] }!
        }
        let normalised = LowShot.centredAndNormalised(x)
        var settings = LowShotProtocol()
        settings.probeLambdas = [1e-1, 1e-2, 1e-3]
        let (model, lambda) = settings.linearProbe(normalised, labels: labels, classes: classes)
        XCTAssertTrue(settings.probeLambdas.contains(lambda))
        XCTAssertTrue(model.converged)
        let reference = LogisticRegression(features: normalised, labels: labels, classes: classes, lambda: lambda * Double(n), tolerance: 1e-5, maxIterations: 5000)
        XCTAssertTrue(reference.converged)
        XCTAssertLessThan(model.weights.relativeDifference(reference.weights), 1e-3)
    }

    /// The from-scratch baseline trains in shuffled batches when the labelled set is larger than one batch,
    /// and learns images that a glance separates.
    func testSupervisedFromScratchLearnsInBatches() throws {
        func image(_ vertical: Bool, _ phase: Int) -> Image {
            Image(width: 8, height: 8, mode: .L, pixels: (0..<64).map { i in UInt8(((vertical ? i / 8 : i % 8) * 32 + phase * 3) % 256) })
        }
        let train = ImagesInMemory(classNames: ["across", "down"], labels: (0..<160).map { $0 % 2 }, images: (0..<160).map { image($0 % 2 == 1, $0 / 2) })
        let test = ImagesInMemory(classNames: ["across", "down"], labels: (0..<20).map { $0 % 2 }, images: (0..<20).map { image($0 % 2 == 1, 7 * $0) })
        var config = ViTMSNConfig()
        (config.hiddenSize, config.numHiddenLayers, config.numAttentionHeads, config.intermediateSize) = (16, 1, 2, 32)
        (config.imageSize, config.patchSize, config.numChannels) = (.square(8), .square(4), 1)
        let predictions = try LowShotBaselines.supervisedFromScratch(
            config: config, processor: ImageProcessor(height: 8, width: 8), train: train, test: test, indices: Array(0..<160), seed: 0, minimumImages: 128 * 40)
        XCTAssertGreaterThanOrEqual(accuracy(predictions, test.labels), 0.9)
    }

    /// Each feature reads the encoder's outputs: cls-prenorm the last block's CLS token, cls the normed one,
    /// cls+patch-mean the normed CLS token followed by the mean of the normed patch tokens, cls+patch-grid the
    /// normed CLS token at unit length followed by the four normed patch tokens at unit length together.
    func testFeaturesReadTheEncoderOutputs() throws {
        var config = ViTMSNConfig()
        (config.hiddenSize, config.numHiddenLayers, config.numAttentionHeads, config.intermediateSize) = (8, 2, 2, 16)
        (config.imageSize, config.patchSize, config.numChannels) = (.square(8), .square(4), 1)
        let encoder = try ViTMSNModel.randomlyInitialized(config: config, seed: 3)
        var generator = SeededGenerator(seed: 4)
        let pixels = Tensor(shape: [3, 1, 8, 8], scalars: (0..<192).map { _ in Float.random(in: -1...1, using: &generator) })
        let output = try encoder.forward(pixelValues: pixels, outputHiddenStates: true)
        let (last, prenorm) = (output.lastHiddenState.scalars, output.hiddenStates!.last!.scalars)  // (3, 5, 8) each
        for (feature, width) in [(LowShot.Feature.preNorm, 8), (.cls, 8), (.clsAndPatchMean, 16)] {
            let rows = try LowShot.featureRows(encoder, pixels: pixels, feature: feature)
            XCTAssertEqual(rows.shape, [3, width], feature.rawValue)
            for b in 0..<3 {
                for j in 0..<8 {
                    let token = { (t: Int) in (feature == .preNorm ? prenorm : last)[(b * 5 + t) * 8 + j] }
                    XCTAssertEqual(rows.scalars[b * width + j], token(0), feature.rawValue)
                    if feature == .clsAndPatchMean {
                        XCTAssertEqual(rows.scalars[b * width + 8 + j], (1...4).map(token).reduce(0, +) / 4, accuracy: 1e-6)
                    }
                }
            }
        }
        // a 2 × 2 grid keeps every patch token
        let rows = try LowShot.featureRows(encoder, pixels: pixels, feature: .clsAndPatchGrid)
        XCTAssertEqual(rows.shape, [3, 40])
        for b in 0..<3 {
            let tokens = Array(last[(b * 40)..<((b + 1) * 40)])
            let (clsNorm, patchesNorm) = (tokens[..<8].map { $0 * $0 }.reduce(0, +).squareRoot(), tokens[8...].map { $0 * $0 }.reduce(0, +).squareRoot())
            for i in 0..<40 {
                XCTAssertEqual(rows.scalars[b * 40 + i], tokens[i] / (i < 8 ? clsNorm : patchesNorm), accuracy: 1e-6)
            }
        }
    }

    /// A grid larger than 4 × 4 is average-pooled as PyTorch's adaptive pooling does: a 6 × 5 grid's cells
    /// span rows 0..<2, 1..<3, 3..<5, 4..<6 and columns 0..<2, 1..<3, 2..<4, 3..<5.
    func testPatchGridPoolsLargeGridsAdaptively() {
        let (height, width, dim) = (6, 5, 2)
        let token = { (t: Int, j: Int) -> Float in t == 0 ? Float(j + 1) : Float((t - 1) * 10 + j) }  // patch p = y·5 + x
        let state = Tensor(shape: [1, 1 + height * width, dim], scalars: (0..<(1 + height * width)).flatMap { t in (0..<dim).map { token(t, $0) } })
        let rows = LowShot.clsAndPatchGrid(state, height: height, width: width)
        XCTAssertEqual(rows.shape, [1, 17 * dim])
        let (rowSpans, columnSpans) = ([0..<2, 1..<3, 3..<5, 4..<6], [0..<2, 1..<3, 2..<4, 3..<5])
        var cells: [Float] = []
        for ys in rowSpans {
            for xs in columnSpans {
                for j in 0..<dim {
                    let values = ys.flatMap { y in xs.map { x in token(1 + y * width + x, j) } }
                    cells.append(values.reduce(0, +) / Float(values.count))
                }
            }
        }
        let norm = cells.map { $0 * $0 }.reduce(0, +).squareRoot()
        XCTAssertEqual(rows.scalars[0], 1 / Float(5).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(rows.scalars[1], 2 / Float(5).squareRoot(), accuracy: 1e-6)
        for (i, cell) in cells.enumerated() { XCTAssertEqual(rows.scalars[dim + i], cell / norm, accuracy: 1e-5, "cell value \(i)") }
    }

    /// The held-out tenth (for --validate and the probe's λ) is a seeded, disjoint cut of every image.
    func testHeldOutTenthPartitionsTheTrainingSet() {
        let (fitted, heldOut) = LowShot.heldOutTenth(count: 1005)
        XCTAssertEqual(heldOut.count, 100)
        XCTAssertEqual(Set(fitted + heldOut), Set(0..<1005))
        XCTAssertEqual(fitted.count + heldOut.count, 1005)
        XCTAssertNotEqual(heldOut, Array(0..<100), "not shuffled")
        XCTAssertEqual(LowShot.heldOutTenth(count: 1005).heldOut, heldOut, "not seeded")
    }

    func testNearestNeighboursAndClassMeans() {
        // Two tight clusters on the unit circle.
        let train = Tensor(shape: [4, 2], scalars: [1, 0, 0.99, 0.14, 0, 1, 0.14, 0.99])
        let test = Tensor(shape: [2, 2], scalars: [0.98, 0.2, 0.2, 0.98])
        XCTAssertEqual(nearestNeighbourPredictions(train: train, labels: [0, 0, 1, 1], classes: 2, test: test, k: 3), [0, 1])
        XCTAssertEqual(nearestClassMeanPredictions(train: train, labels: [0, 0, 1, 1], classes: 2, test: test), [0, 1])
    }
}
