import ArgumentParser
import Foundation
import ViTCore
import ViTMSN

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time the fp32 forward pass: median ms per batch, images/s and GFLOP/s."
    )

    @Option(help: "Model directory to time.") var model: String?
    @Option(help: "Shape preset with random weights: small, base, large, base-4, large-7.") var preset: String?
    @Option(help: "Images per batch.") var batch = 8
    @Option(help: "Seconds of timed runs (after one warm-up run); at least 3 runs are timed.") var seconds = 10.0
    @OptionGroup var threading: ThreadOptions
    @Flag(help: "Print one JSON object instead of text.") var json = false

    func run() throws {
        let backbone: ViTMSNModel
        switch (model, preset) {
        case (let directory?, nil): backbone = try ViTMSNModel.load(directory: directory, warn: warn)
        case (nil, let name?): backbone = try ViTMSNModel.randomlyInitialized(config: ViTMSNConfig.preset(name), seed: 0)
        default: throw CLIError("give exactly one of --model and --preset")
        }
        backbone.parallelism = threading.parallelism
        let config = backbone.config
        var generator = SeededGenerator(seed: 1)
        let shape = [batch, config.numChannels, config.imageSize.height, config.imageSize.width]
        let pixels = Tensor(shape: shape, scalars: (0..<Tensor.elementCount(shape)).map { _ in generator.normal() })

        _ = try backbone.forward(pixelValues: pixels)
        var times: [Double] = []
        let start = Date()
        while times.count < 3 || Date().timeIntervalSince(start) < seconds {
            let t0 = Date()
            _ = try backbone.forward(pixelValues: pixels)
            times.append(Date().timeIntervalSince(t0))
        }
        let median = times.sorted()[times.count / 2]
        let gflops = config.forwardFLOPs(height: shape[2], width: shape[3]) * Double(batch) / median / 1e9
        let imagesPerSecond = Double(batch) / median
        if json {
            print("{\"batch\": \(batch), \"runs\": \(times.count), \"median_ms\": \(median * 1000), \"images_per_s\": \(imagesPerSecond), \"gflops\": \(gflops), \"kernels\": \"\(VectorMath.instructionSet)\", \"threads\": \(backbone.parallelism.threads)}")
        } else {
            print(String(format: "batch %d: median %.1f ms over %d runs, %.2f images/s, %.1f GFLOP/s (%d threads, %@ kernels)",
                         batch, median * 1000, times.count, imagesPerSecond, gflops, backbone.parallelism.threads, VectorMath.instructionSet))
        }
    }
}
