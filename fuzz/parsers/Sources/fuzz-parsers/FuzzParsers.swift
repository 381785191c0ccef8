// libFuzzer entry point for every parser a downloaded or user-supplied file, or a request to the server,
// reaches: the first byte of an input picks the parser, the rest is the file or request. Every input must load
// or throw; a trap, an out-of-bounds read (AddressSanitizer) or a hang is a finding. The image decoders have
// their own C harness.
import Foundation
import ViTCore
import ViTIO
import ViTModel
import ViTTrain
@testable import ViTServe  // the request parsers are internal to the server
import ViTVision

enum Parser: UInt8, CaseIterable {
    case safetensors, torch, msn, idx, config, preprocessor, pretrainJSON, pretrainYAML
    /// An Open Inference Protocol request: two bytes of Inference-Header-Content-Length (0xFFFF: none, all JSON),
    /// then the body (a JSON header, and binary tensor data after it).
    case inferenceRequest
    /// A simple endpoint's body: a Content-Type line, then the body (raw, or a multipart form).
    case imageBody

    var fileName: String {
        switch self {
        case .safetensors: "model.safetensors"
        case .torch: "pytorch_model.bin"
        case .msn: "checkpoint.pth.tar"
        case .idx: "images-idx3-ubyte"
        case .config: "config.json"
        case .preprocessor: "preprocessor_config.json"
        case .pretrainJSON: "pretrain.json"
        case .pretrainYAML: "pretrain.yaml"
        case .inferenceRequest: "request.bin"
        case .imageBody: "body.bin"
        }
    }

    /// Parses the file at `path` and reads everything it claims to hold.
    func run(_ path: String) throws {
        switch self {
        case .safetensors:
            let file = try SafetensorsFile(path: path)
            for name in file.tensorNames { _ = try file.floatTensor(name) }
        case .torch:
            let checkpoint = try TorchCheckpoint(path: path)
            for name in checkpoint.tensorNames { _ = try checkpoint.floatTensor(name) }
        case .msn: _ = try MSNCheckpoint(path: path)
        case .idx: _ = try IDXFile(path: path)
        case .config: _ = try ViTMSNConfig.load(path: path)
        case .preprocessor: _ = try ImageProcessor.load(path: path)
        case .pretrainJSON, .pretrainYAML: _ = try PretrainConfig(path: path)
        case .inferenceRequest:
            let input = try Data(contentsOf: URL(fileURLWithPath: path))
            guard input.count >= 2 else { return }
            let length = Int(input[input.startIndex]) << 8 | Int(input[input.startIndex + 1])
            _ = try InferenceProtocol.parse(Data(input.dropFirst(2)), headerLength: length == 0xFFFF ? nil : length, model: servedModel, maxImages: 8)
        case .imageBody:
            let input = try Data(contentsOf: URL(fileURLWithPath: path))
            let line = input.firstIndex(of: 10) ?? input.endIndex
            _ = try ModelServer.imageFile(body: Data(input[line...].dropFirst()), contentType: String(decoding: input[..<line], as: UTF8.self))
        }
    }
}

/// The fixture backbone the request parser checks inputs against (its size, channels and labels).
let servedModel = try! ServedModel(
    name: "fuzz", model: URL(fileURLWithPath: #filePath).appendingPathComponent("../../../../../Tests/Fixtures/models/base").standardized.path,
    parallelism: Parallelism(threads: 1), warn: { _ in })

let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("vitmsn-fuzz-\(getpid())").path

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0, let parser = Parser(rawValue: data[0] % UInt8(Parser.allCases.count)) else { return 0 }
    try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    let path = scratch + "/" + parser.fileName
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes: data + 1, count: size - 1)) else { return 0 }
    _ = try? parser.run(path)
    return 0
}
