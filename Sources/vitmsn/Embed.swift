import ArgumentParser
import Foundation
import ViTDistributed
import ViTIO
import ViTMSN

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Embed image files or a whole folder with the encoder: one vector per image.",
        discussion: """
            Pooling: cls is the CLS token after the final LayerNorm (what ViTMSNForImageClassification classifies); \
            mean averages the patch tokens after the final LayerNorm. Formats: safetensors (embeddings F32 [N, D], \
            paths in the metadata), npy (float32 [N, D], paths in FILE.paths.txt) or jsonl ({"image", "embedding"} per line). \
            The next batch is decoded while the model runs on the current one; unreadable images are reported and skipped. \
            Under mpirun the images are shared out among the ranks and rank 0 writes them all.
            """
    )

    @OptionGroup var modelOptions: ModelOptions
    @Argument(help: "Image files (JPEG, PNG, WebP, GIF, BMP, TIFF).") var images: [String] = []
    @Option(help: "A folder to embed every image (JPEG, PNG, WebP, GIF, BMP, TIFF) below.") var dir: String?
    @Option(help: "File to write.") var output: String
    @Option(help: "cls or mean.") var pooling = "cls"
    @Option(help: "safetensors, npy or jsonl.") var format = "safetensors"
    @Flag(help: "L2-normalise each embedding.") var normalize = false
    @Option(help: "Images per forward pass.") var batchSize = 16
    @OptionGroup var imageOptions: ImageOptions
    @OptionGroup var precision: PrecisionOptions
    @OptionGroup var threading: ThreadOptions
    @OptionGroup var job: JobOptions

    func validate() throws {
        guard ["cls", "mean"].contains(pooling) else { throw ValidationError("--pooling must be cls or mean") }
        guard ["safetensors", "npy", "jsonl"].contains(format) else { throw ValidationError("--format must be safetensors, npy or jsonl") }
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
        guard !images.isEmpty || dir != nil else { throw ValidationError("give image files or --dir") }
    }

    func run() throws {
        let paths = try images + (dir.map { try imageFiles(in: $0) } ?? [])
        guard !paths.isEmpty else { throw CLIError("\(dir ?? ""): no image files (\(imageExtensionList))") }
        let failed = try job.run { communicator in try embed(paths, communicator: communicator) }
        if failed { throw ExitCode(1) }
    }

    /// Embeds this rank's share of `paths`; rank 0 writes every rank's. Returns whether any image failed.
    private func embed(_ paths: [String], communicator: Communicator) throws -> Bool {
        let embed = try ImageFeatureExtractionPipeline(
            model: modelOptions.model, revision: modelOptions.revision, precision: precision.dtype, reading: imageOptions.reading,
            parallelism: threading.parallelism(in: communicator))
        let mine = communicator.slice(of: paths.count)
        let progress = communicator.rank == 0 ? ProgressBar(total: mine.count, label: "embedding") : nil
        let results = embed(paths[mine].map(ImageInput.file), pooling: Pooling(rawValue: pooling)!, normalize: normalize, batchSize: batchSize) {
            progress?.update(done: $0)
        }
        let failed = report(results) // each rank names its own failures
        let dimension = embed.model.config.hiddenSize
        let local = results.map { try? $0.get() }
        let vectors = communicator.gatherRows(local, at: mine, count: paths.count, width: dimension, label: "the embeddings")
        let embedded = zip(paths, vectors).compactMap { path, vector in vector.map { (path: path, vector: $0) } }
        progress?.finish(done: local.compactMap { $0 }.count)
        if communicator.rank == 0 { try write(embedded, dimension: dimension) }
        return failed || embedded.count < paths.count
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
