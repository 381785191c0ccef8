import ArgumentParser
import Foundation
import ViTCore
import ViTMSN
import ViTVision

struct Classify: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the top labels of image files with their probabilities.")

    @OptionGroup var modelOptions: ModelOptions
    @Argument(help: "JPEG or PNG files.") var images: [String]
    @Option(help: "How many labels to print per image.") var topK = 5
    @Option(help: "Images per forward pass.") var batchSize = 8
    @Flag(help: "Print JSON: one array of {image, predictions: [{label, score}]}.") var json = false
    @OptionGroup var imageOptions: ImageOptions
    @OptionGroup var threading: ThreadOptions

    func validate() throws {
        guard topK > 0, batchSize > 0 else { throw ValidationError("--top-k and --batch-size must be positive") }
    }

    func run() throws {
        let model = try modelOptions.directory()
        guard case .imageClassification(let classifier) = try AnyViTMSN.load(directory: model, warn: warn) else {
            throw CLIError("\(model) is a ViTMSNModel (no classification head): fine-tune it or give a ViTMSNForImageClassification directory")
        }
        guard classifier.config.numLabels > 0 else { throw CLIError("\(model) has num_labels = 0: there are no labels to print") }
        classifier.vit.parallelism = threading.parallelism
        let processor = try ImageProcessor.load(modelDirectory: model)
        var output: [[String: Any]] = []
        var failures: [ImageError] = []
        for start in stride(from: 0, to: images.count, by: batchSize) {
            let paths = Array(images[start..<min(start + batchSize, images.count)])
            let results = imageOptions.pixelValues(paths, processor: processor)
            let good = zip(paths, results).compactMap { path, r in (try? r.get()).map { (path, $0) } }
            failures += results.compactMap { if case .failure(let e) = $0 { e } else { nil } }
            guard !good.isEmpty else { continue }
            let logits = try classifier.forward(pixelValues: Tensor.stacked(good.map(\.1))).logits.scalars
            let labels = classifier.config.numLabels
            for (b, (path, _)) in good.enumerated() {
                let row = logits[(b * labels)..<((b + 1) * labels)]
                let maximum = row.max()!
                let exps = row.map { Foundation.exp(Double($0 - maximum)) }
                let total = exps.reduce(0, +)
                let ranked = exps.enumerated().sorted { $0.element > $1.element }.prefix(topK)
                let predictions = ranked.map { ["label": classifier.config.id2label[$0.offset] ?? "LABEL_\($0.offset)", "score": $0.element / total] as [String: Any] }
                output.append(["image": path, "predictions": predictions])
                if !json {
                    print(path)
                    for p in predictions { print(String(format: "  %.4f  %@", p["score"] as! Double, p["label"] as! String)) }
                }
            }
        }
        if json {
            let data = try JSONSerialization.data(withJSONObject: output, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
        if report(failures) { throw ExitCode(1) }
    }
}
