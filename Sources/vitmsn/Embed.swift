import ArgumentParser
import Foundation
import ViTIO
import ViTMSN

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Embed image files or a whole folder with the encoder: one vector per image.",
        discussion: """
            Pooling: cls is the CLS token after the final LayerNorm (what ViTMSNForImageClassification classifies); \
            mean averages the patch tokens after the final LayerNorm. Formats: safetensors (embeddings F32 [N, D], \
            paths in the metadata), npy (float32 [N, D], paths in FILE.paths.txt) or jsonl ({"image", "embedding"} per line). \
            The next batch is decoded while the model runs on the current one; unreadable images are reported and skipped.
            """
    )

    @OptionGroup var modelOptions: ModelOptions
    @Argument(help: "JPEG or PNG files.") var images: [String] = []
    @Option(help: "A folder to embed every .jpg/.jpeg/.png below.") var dir: String?
    @Option(help: "File to write.") var output: String
    @Option(help: "cls or mean.") var pooling = "cls"
    @Option(help: "safetensors, npy or jsonl.") var format = "safetensors"
    @Flag(help: "L2-normalise each embedding.") var normalize = false
    @Option(help: "Images per forward pass.") var batchSize = 16
    @OptionGroup var imageOptions: ImageOptions
    @OptionGroup var precision: PrecisionOptions
    @OptionGroup var threading: ThreadOptions

    func validate() throws {
        guard ["cls", "mean"].contains(pooling) else { throw ValidationError("--pooling must be cls or mean") }
        guard ["safetensors", "npy", "jsonl"].contains(format) else { throw ValidationError("--format must be safetensors, npy or jsonl") }
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
        guard !images.isEmpty || dir != nil else { throw ValidationError("give image files or --dir") }
    }

    func run() throws {
        let paths = try images + (dir.map { try imageFiles(in: $0) } ?? [])
        guard !paths.isEmpty else { throw CLIError("\(dir ?? ""): no .jpg, .jpeg or .png files") }
        let embed = try ImageFeatureExtractionPipeline(
            model: modelOptions.model, revision: modelOptions.revision, precision: precision.dtype, reading: imageOptions.reading, parallelism: threading.parallelism)
        let progress = ProgressBar(total: paths.count, label: "embedding")
        let results = embed(paths.map(ImageInput.file), pooling: Pooling(rawValue: pooling)!, normalize: normalize, batchSize: batchSize) {
            progress.update(done: $0)
        }
        let embedded = zip(paths, results).compactMap { path, result in (try? result.get()).map { (path: path, vector: $0) } }
        progress.finish(done: embedded.count)
        try write(embedded, dimension: embed.model.config.hiddenSize)
        if report(results) { throw ExitCode(1) }
    }

    private func write(_ rows: [(path: String, vector: [Float])], dimension: Int) throws {
        let matrix = Tensor(shape: [rows.count, dimension], scalars: rows.flatMap(\.vector))
        switch format {
        case "safetensors":
            let paths = String(decoding: try JSONSerialization.data(withJSONObject: rows.map(\.path)), as: UTF8.self)
            try SafetensorsWriter.write([SafetensorsRecord(name: "embeddings", tensor: matrix)],
                                        metadata: ["format": "pt", "paths": paths, "pooling": pooling, "normalized": "\(normalize)"], to: output)
        case "npy":
            try writeAtomically(npy(matrix), to: output)
            if isStream(output) { warn("the paths of the rows are not written beside a stream (\(output))") } else {
                try writeAtomically(Data((rows.map(\.path).joined(separator: "\n") + "\n").utf8), to: output + ".paths.txt")
            }
        default:
            var lines = Data()
            for row in rows {
                lines.append(try JSONSerialization.data(withJSONObject: ["image": row.path, "embedding": row.vector.map(Double.init)], options: [.sortedKeys]))
                lines.append(0x0A)
            }
            try writeAtomically(lines, to: output)
        }
        status("wrote \(rows.count) embeddings of \(dimension) (\(pooling) pooling) to \(output)", writing: output)
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
