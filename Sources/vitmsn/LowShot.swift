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
        abstract: "Low-shot evaluation as the MSN paper runs it: frozen features, logistic regression on k images per class.",
        discussion: """
        Features are the normed CLS token beside the normed patch tokens average-pooled to at most 4 × 4 cells, \
        each part scaled to unit length (cls+patch-grid, the default), the CLS token beside the patch tokens' mean (cls+patch-mean, DINO's linear \
        evaluation), the CLS token alone after the final LayerNorm (cls) or before it (cls-prenorm, the \
        official MSN evaluation), each centred and L2-normalised; the classifier is L2-regularised multinomial logistic \
        regression (Σ CE + λ/2 ‖W‖², no intercept). Rows: k images per class over seeded splits (mean ± std), \
        a 1 % split, a linear probe on all labels (λ chosen on a held-out tenth of the training set) and k-NN \
        (k = 20). --baselines adds, on the same splits: raw pixels through the same logistic regression and \
        k-NN, raw pixels by nearest class mean, the same ViT with random weights, and the same ViT trained \
        from scratch on each row's labels. Under \
        mpirun the feature extraction is shared out among the ranks, and rank 0 prints the table. --validate \
        holds out a seeded tenth of the training set and evaluates on it instead of the test set, for choosing \
        settings without looking at the test set.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "fashion-mnist, or a folder with train/ and val/ (one sub-folder per class each).") var dataset = "fashion-mnist"
    @Option(help: "Images per class, comma-separated.") var shots = "1,2,5"
    @Option(help: "Seeded splits per shot count.") var splits = 3
    @Option(help: "cls+patch-grid, cls+patch-mean, cls or cls-prenorm.") var feature = "cls+patch-grid"
    @Option(help: "L2 regularisation λ.") var lambda = 0.0025
    @Option(help: "The linear probe's candidate λ per training image, comma-separated (chosen on a held-out tenth of the training set).") var probeLambdas = "1e-4,1e-5,1e-6,1e-7"
    @Option(help: "Evaluate on the first N test images only.") var maxTestImages: Int?
    @Flag(help: "Also measure the baselines on the same splits.") var baselines = false
    @Flag(help: "Skip the 1 %, all-labels and k-NN rows.") var shotsOnly = false
    @Flag(help: "Evaluate on a held-out tenth of the training set (training on the rest), not on the test set.") var validate = false
    @Flag(help: "Print one JSON object (every column's rows with each split's accuracy) instead of the table.") var json = false
    @OptionGroup var precision: PrecisionOptions
    @OptionGroup var threading: ThreadOptions
    @OptionGroup var job: JobOptions

    func run() throws {
        ProcessSettings.keepFreedMemoryInHeap()
        try job.run(evaluate)
    }

    private func evaluate(communicator: Communicator) throws {
        guard let feature = LowShot.Feature(rawValue: feature) else { throw CLIError("--feature must be one of \(LowShot.Feature.allCases.map(\.rawValue).joined(separator: ", "))") }
        let shotCounts = shots.split(separator: ",").compactMap { Int($0) }
        guard !shotCounts.isEmpty, shotCounts.allSatisfy({ $0 > 0 }), splits > 0 else { throw CLIError("--shots needs positive counts, --splits a positive number") }
        let candidates = probeLambdas.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !candidates.isEmpty, candidates.allSatisfy({ ($0 ?? -1) > 0 && $0!.isFinite }) else { throw CLIError("--probe-lambdas needs positive numbers, got '\(probeLambdas)'") }
        let directory = try modelOptions.directory()
        let encoder = try ViTMSNModel.load(directory: directory)  // the backbone, on purpose: no warning for a classifier's head
        encoder.convert(to: precision.dtype)
        encoder.parallelism = threading.parallelism(in: communicator)
        let processor = try ImageProcessor.load(modelDirectory: directory, orDefaultFor: encoder.config)
        let (labelled, testSet) = try labelledPair(dataset, grayscale: encoder.config.numChannels == 1)
        let (train, fullTest): (LabeledImages, LabeledImages)
        if validate {
            let (fitted, heldOut) = LowShot.heldOutTenth(count: labelled.count)
            (train, fullTest) = (Subset(labelled, indices: fitted), Subset(labelled, indices: heldOut))
        } else {
            guard let testSet else { throw CLIError("\(dataset): lowshot tests on \(dataset)/val, which is missing") }
            (train, fullTest) = (labelled, testSet)
        }
        let test: LabeledImages = maxTestImages.map { Subset(fullTest, indices: Array(0..<min($0, fullTest.count))) } ?? fullTest
        var protocolSettings = LowShotProtocol()
        (protocolSettings.shots, protocolSettings.splits, protocolSettings.lambda) = (shotCounts, splits, lambda)
        protocolSettings.probeLambdas = candidates.map { $0! }
        if shotsOnly { (protocolSettings.onePercent, protocolSettings.nearestNeighbours, protocolSettings.allLabels) = (false, false, false) }
        let classes = train.classNames.count
        let log = { (line: String) in if communicator.rank == 0 { FileHandle.standardError.write(Data((line + "\n").utf8)) } }

        func table(_ model: ViTMSNModel) throws -> [LowShotRow] {
            let started = Date()
            let needed = protocolSettings.trainingIndices(labels: train.labels, classes: classes)
            let trainFeatures = try LowShot.features(model, data: train, processor: processor, feature: feature, only: needed, communicator: communicator)
            let testFeatures = try LowShot.features(model, data: test, processor: processor, feature: feature, communicator: communicator)
            log(String(format: "features of %d + %d images in %.0f s", needed?.count ?? train.count, test.count, Date().timeIntervalSince(started)))
            return protocolSettings.evaluate(train: trainFeatures, trainLabels: train.labels, test: testFeatures, testLabels: test.labels, classes: classes)
        }
        var columns: [(name: String, rows: [LowShotRow])] = [("\(directory.split(separator: "/").last ?? "model")", try table(encoder))]
        if baselines {
            let channels = encoder.config.numChannels
            let (trainPixels, testPixels) = try (LowShotBaselines.pixelFeatures(train, processor: processor, channels: channels),
                                                 LowShotBaselines.pixelFeatures(test, processor: processor, channels: channels))
            columns.append(("raw pixels", protocolSettings.evaluate(train: trainPixels, trainLabels: train.labels, test: testPixels, testLabels: test.labels, classes: classes)))
            let (trainNormalised, testNormalised) = (LowShot.centredAndNormalised(trainPixels), LowShot.centredAndNormalised(testPixels))
            columns.append(("raw pixels, class mean", protocolSettings.evaluate(trainLabels: train.labels, testLabels: test.labels, classes: classes) { _, indices in
                nearestClassMeanPredictions(train: trainNormalised.gatheredRows(indices), labels: indices.map { train.labels[$0] }, classes: classes, test: testNormalised)
            }))
            columns.append(("random-weight ViT", try table(try ViTMSNModel.randomlyInitialized(config: encoder.config, seed: 1))))
            var runs = 0
            columns.append(("ViT from scratch on the labels", try protocolSettings.evaluate(trainLabels: train.labels, testLabels: test.labels, classes: classes) { row, indices in
                let started = Date()
                defer { runs += 1 }
                let predictions = try LowShotBaselines.supervisedFromScratch(
                    config: encoder.config, processor: processor, train: train, test: test, indices: indices, seed: runs, parallelism: threading.parallelism(in: communicator))
                log(String(format: "from scratch on %@ (%d images): %.0f s", row, indices.count, Date().timeIntervalSince(started)))
                return predictions
            }))
        }
        guard communicator.rank == 0 else { return }
        if json {
            let object: [String: Any] = [
                "dataset": dataset, "test_images": test.count, "held_out_training_images": validate, "feature": feature.rawValue, "lambda": lambda, "splits": splits,
                "columns": columns.map { column in
                    ["name": column.name, "rows": column.rows.map { row in
                        ["protocol": row.name, "accuracies": row.accuracies, "mean": row.mean, "std": row.standardDeviation, "note": row.note as Any] as [String: Any]
                    }] as [String: Any]
                },
            ]
            return print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        }
        print("low-shot top-1 % on \(test.count) \(validate ? "held-out training" : "test") images (\(dataset)), \(feature.rawValue) features, λ = \(lambda), mean ± std over \(splits) splits")
        print("| protocol | " + columns.map(\.name).joined(separator: " | ") + " |")
        print("|---|" + String(repeating: "---|", count: columns.count))
        for row in columns[0].rows.map(\.name) {
            let cells = columns.map { column -> String in
                guard let cell = column.rows.first(where: { $0.name == row }) else { return "–" }
                return cell.accuracies.count > 1 ? String(format: "%.1f ± %.1f", cell.mean * 100, cell.standardDeviation * 100) : String(format: "%.1f", cell.mean * 100)
            }
            print("| \(row) | " + cells.joined(separator: " | ") + " |")
        }
        if baselines {
            print("Classifiers: logistic regression on frozen features (λ fixed on k-shot and 1 %; the linear probe's λ held out) and k-NN; "
                  + "class mean by cosine; the from-scratch ViT's own head.")
        }
        for column in columns { for row in column.rows { if let note = row.note { print("\(column.name): \(note)") } } }
    }
}
