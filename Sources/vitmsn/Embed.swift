import ArgumentParser
import Dispatch
import Foundation
import ViTCore
import ViTIO
import ViTMSN
import ViTVision

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Embed image files or a whole folder with the encoder: one vector per image.",
        discussion: """
            Pooling: cls is the CLS token after the final LayerNorm (what ViTMSNForImageClassification classifies); \
            mean averages the patch tokens after the final LayerNorm. Formats: safetensors (embeddings F32 [N, D], \
            paths in the metadata), npy (float32 [N, D], paths in FILE.paths.txt) or jsonl ({"image", "embedding"} per line). \
            The next batch is decoded while the model runs on the current one.
            """
    )

    @OptionGroup var modelOptions: ModelOptions
    @Argument(help: "JPEG or PNG files.") var images: [String] = []
    @Option(help: "A folder to embed every .jpg/.jpeg/.png below.") var dir: String?
    @Option(help: "File to write.") var output: String
    @Option(help: "cls or mean.") var pooling = "cls"
    @Option(help: "safetensors, npy or jsonl.") var format = "safetensors"
    @Option(help: "Images per forward pass.") var batchSize = 16
    @OptionGroup var imageOptions: ImageOptions
    @OptionGroup var threading: ThreadOptions

    func validate() throws {
        guard ["cls", "mean"].contains(pooling) else { throw ValidationError("--pooling must be cls or mean") }
        guard ["safetensors", "npy", "jsonl"].contains(format) else { throw ValidationError("--format must be safetensors, npy or jsonl") }
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
        guard !images.isEmpty || dir != nil else { throw ValidationError("give image files or --dir") }
    }

    func run() throws {
        let model = try modelOptions.directory()
        let paths = try images + (dir.map(imageFiles) ?? [])
        guard !paths.isEmpty else { throw CLIError("\(dir ?? ""): no .jpg, .jpeg or .png files") }
        let encoder = try AnyViTMSN.load(directory: model, warn: warn).backbone
        encoder.parallelism = threading.parallelism
        let processor = try ImageProcessor.load(modelDirectory: model)
        let batches = stride(from: 0, to: paths.count, by: batchSize).map { Array(paths[$0..<min($0 + batchSize, paths.count)]) }

        // Decode batch i + 1 on a background queue while the model runs on batch i.
        let decoded = DecodedBatches(count: batches.count)
        let decode = { (i: Int) in decoded.store(i, imageOptions.pixelValues(batches[i], processor: processor)) }
        decoded.start(0, decode)
        var embedded: [(path: String, vector: [Float])] = []
        var failures: [ImageError] = []
        let progress = ProgressBar(total: paths.count, label: "embedding")
        for (i, batch) in batches.enumerated() {
            let results = decoded.take(i)
            if i + 1 < batches.count { decoded.start(i + 1, decode) }
            let good = zip(batch, results).compactMap { path, r in (try? r.get()).map { (path, $0) } }
            failures += results.compactMap { if case .failure(let e) = $0 { e } else { nil } }
            if !good.isEmpty {
                let hidden = try encoder.forward(pixelValues: Tensor.stacked(good.map(\.1))).lastHiddenState
                embedded += zip(good.map(\.0), pool(hidden)).map { ($0, $1) }
            }
            progress.update(done: embedded.count + failures.count)
        }
        progress.finish(done: embedded.count)
        try write(embedded, dimension: encoder.config.hiddenSize)
        if report(failures) { throw ExitCode(1) }
    }

    /// (B, S, D) → B vectors of D.
    private func pool(_ hidden: Tensor) -> [[Float]] {
        let (batch, sequence, dim) = (hidden.shape[0], hidden.shape[1], hidden.shape[2])
        let values = hidden.scalars
        return (0..<batch).map { b in
            let base = b * sequence * dim
            guard pooling == "mean" else { return Array(values[base..<(base + dim)]) }
            var mean = [Float](repeating: 0, count: dim)
            for t in 1..<sequence { for d in 0..<dim { mean[d] += values[base + t * dim + d] } }
            return mean.map { $0 / Float(sequence - 1) }
        }
    }

    private func write(_ rows: [(path: String, vector: [Float])], dimension: Int) throws {
        let matrix = Tensor(shape: [rows.count, dimension], scalars: rows.flatMap(\.vector))
        switch format {
        case "safetensors":
            let paths = String(decoding: try JSONSerialization.data(withJSONObject: rows.map(\.path)), as: UTF8.self)
            try SafetensorsWriter.write([SafetensorsRecord(name: "embeddings", tensor: matrix)],
                                        metadata: ["format": "pt", "paths": paths, "pooling": pooling], to: output)
        case "npy":
            try writeAtomically(npy(matrix), to: output)
            try writeAtomically(Data((rows.map(\.path).joined(separator: "\n") + "\n").utf8), to: output + ".paths.txt")
        default:
            var lines = Data()
            for row in rows {
                lines.append(try JSONSerialization.data(withJSONObject: ["image": row.path, "embedding": row.vector.map(Double.init)], options: [.sortedKeys]))
                lines.append(0x0A)
            }
            try writeAtomically(lines, to: output)
        }
        print("wrote \(rows.count) embeddings of \(dimension) (\(pooling) pooling) to \(output)")
    }

    private func imageFiles(in folder: String) throws -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue,
              let walker = FileManager.default.enumerator(atPath: folder)
        else { throw CLIError("\(folder): not a folder that can be listed") }
        return walker.compactMap { $0 as? String }
            .filter { ["jpg", "jpeg", "png"].contains(URL(fileURLWithPath: $0).pathExtension.lowercased()) }
            .sorted()
            .map { folder + "/" + $0 }
    }
}

/// NumPy's .npy (version 1.0) for a little-endian float32 matrix.
func npy(_ matrix: Tensor) -> Data {
    var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(matrix.shape[0]), \(matrix.shape[1])), }"
    header += String(repeating: " ", count: (64 - (10 + header.count + 1) % 64) % 64) + "\n"
    var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
    withUnsafeBytes(of: UInt16(header.utf8.count).littleEndian) { data.append(contentsOf: $0) }
    data.append(contentsOf: Array(header.utf8))
    matrix.withUnsafeBufferPointer { data.append(contentsOf: UnsafeRawBufferPointer($0)) }
    return data
}

/// Batches decoded on a background queue, handed over in order.
private final class DecodedBatches: @unchecked Sendable {
    private var slots: [[Result<Tensor, ImageError>]?]
    private let ready: [DispatchSemaphore]
    private let lock = NSLock()

    init(count: Int) {
        slots = Array(repeating: nil, count: count)
        ready = (0..<count).map { _ in DispatchSemaphore(value: 0) }
    }

    func start(_ index: Int, _ work: @escaping (Int) -> Void) {
        let job = UncheckedSendable(work)
        DispatchQueue.global().async { job.value(index) }
    }

    func store(_ index: Int, _ results: [Result<Tensor, ImageError>]) {
        lock.withLock { slots[index] = results }
        ready[index].signal()
    }

    func take(_ index: Int) -> [Result<Tensor, ImageError>] {
        ready[index].wait()
        return lock.withLock { slots[index]! }
    }
}
