import ArgumentParser
import Foundation
import ViTCore
import ViTDistributed
import ViTModel
import ViTMSN
import ViTTrain
import ViTVision

struct LowShotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lowshot",
        abstract: "Low-shot evaluation as the MSN paper runs it: frozen CLS features, logistic regression on k images per class.",
        discussion: """
        Features are the CLS token before the final LayerNorm (cls-prenorm, the official evaluation) or after \
        it (cls), each centred and L2-normalised; the classifier is L2-regularised multinomial logistic \
        regression (Σ CE + λ/2 ‖W‖², no intercept). Rows: k images per class over seeded splits (mean ± std), \
        a 1 % split, k-NN (k = 20) and a linear probe on all labels. --baselines adds raw pixels (nearest class \
        mean), the same ViT with random weights, and the same ViT trained from scratch on the k labels. Under \
        mpirun the feature extraction is shared out among the ranks, and rank 0 prints the table.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "fashion-mnist, or a folder with train/ and val/ (one sub-folder per class each).") var dataset = "fashion-mnist"
    @Option(help: "Images per class, comma-separated.") var shots = "1,2,5"
    @Option(help: "Seeded splits per shot count.") var splits = 3
    @Option(help: "cls-prenorm or cls.") var feature = "cls-prenorm"
    @Option(help: "L2 regularisation λ.") var lambda = 0.0025
    @Option(help: "Evaluate on the first N test images only.") var maxTestImages: Int?
    @Flag(help: "Also measure the three baselines on the same splits.") var baselines = false
    @Flag(help: "Skip the 1 % split, k-NN and linear probe rows.") var shotsOnly = false
    @OptionGroup var precision: PrecisionOptions
    @OptionGroup var threading: ThreadOptions
    @OptionGroup var job: JobOptions

    func run() throws {
        ProcessSettings.keepFreedMemoryInHeap()
        try job.run(evaluate)
    }

    private func evaluate(communicator: Communicator) throws {
        guard let feature = LowShot.Feature(rawValue: feature) else { throw CLIError("--feature must be cls-prenorm or cls") }
        let shotCounts = shots.split(separator: ",").compactMap { Int($0) }
        guard !shotCounts.isEmpty, shotCounts.allSatisfy({ $0 > 0 }), splits > 0 else { throw CLIError("--shots needs positive counts, --splits a positive number") }
        let directory = try modelOptions.directory()
        let encoder = try ViTMSNModel.load(directory: directory)  // the backbone, on purpose: no warning for a classifier's head
        encoder.convert(to: precision.dtype)
        encoder.parallelism = threading.parallelism(in: communicator)
        let processor = try ImageProcessor.load(modelDirectory: directory, orDefaultFor: encoder.config)
        let (train, fullTest) = try labelledPair(dataset, grayscale: encoder.config.numChannels == 1)
        let test: LabeledImages = maxTestImages.map { Subset(fullTest, indices: Array(0..<min($0, fullTest.count))) } ?? fullTest
        var protocolSettings = LowShotProtocol()
        (protocolSettings.shots, protocolSettings.splits, protocolSettings.lambda) = (shotCounts, splits, lambda)
        if shotsOnly { (protocolSettings.onePercent, protocolSettings.nearestNeighbours, protocolSettings.linearProbe) = (false, false, false) }
        let classes = train.classNames.count

        func table(_ model: ViTMSNModel) throws -> [(String, Double, Double)] {
            let started = Date()
            let needed = protocolSettings.trainingIndices(labels: train.labels, classes: classes)
            let trainFeatures = try LowShot.features(model, data: train, processor: processor, feature: feature, only: needed, communicator: communicator)
            let testFeatures = try LowShot.features(model, data: test, processor: processor, feature: feature, communicator: communicator)
            if communicator.rank == 0 { FileHandle.standardError.write(Data(String(format: "features of %d + %d images in %.0f s\n", needed?.count ?? train.count, test.count, Date().timeIntervalSince(started)).utf8)) }
            return protocolSettings.evaluate(train: trainFeatures, trainLabels: train.labels, test: testFeatures, testLabels: test.labels, classes: classes)
        }
        var columns: [(String, [(String, Double, Double)])] = [("\(directory.split(separator: "/").last ?? "model")", try table(encoder))]
        if baselines {
            columns.append(("raw pixels (class mean)", try shotCounts.map { k in
                let results = try (0..<splits).map { try LowShotBaselines.rawPixels(
                    train: train, test: test, shots: k, split: $0, processor: processor, channels: encoder.config.numChannels) }
                return ("\(k) per class", mean(results), standardDeviation(results))
            }))
            columns.append(("random-weight ViT", try table(try ViTMSNModel.randomlyInitialized(config: encoder.config, seed: 1))))
            columns.append(("ViT from scratch on k labels", try shotCounts.map { k in
                let results = try (0..<splits).map { split in
                    try LowShotBaselines.supervisedFromScratch(config: encoder.config, processor: processor, train: train, test: test, shots: k, split: split, parallelism: threading.parallelism(in: communicator))
                }
                return ("\(k) per class", mean(results), standardDeviation(results))
            }))
        }
        guard communicator.rank == 0 else { return }
        print("low-shot top-1 % on \(test.count) test images (\(dataset)), \(feature.rawValue) features, λ = \(lambda), mean ± std over \(splits) splits")
        print("| protocol | " + columns.map(\.0).joined(separator: " | ") + " |")
        print("|---|" + String(repeating: "---|", count: columns.count))
        for (row, _, _) in columns[0].1 {
            let cells = columns.map { column -> String in
                guard let cell = column.1.first(where: { $0.0 == row }) else { return "–" }
                return cell.2 > 0 ? String(format: "%.1f ± %.1f", cell.1 * 100, cell.2 * 100) : String(format: "%.1f", cell.1 * 100)
            }
            print("| \(row) | " + cells.joined(separator: " | ") + " |")
        }
    }
}
