// libFuzzer entry point for every parser a downloaded or user-supplied file reaches: the first byte of an
// input picks the parser, the rest is the file. Every input must load or throw; a trap, an out-of-bounds
// read (AddressSanitizer) or a hang is a finding. The image decoders have their own C harness.
import Foundation
import ViTIO
import ViTModel
import ViTTrain
import ViTVision

enum Parser: UInt8, CaseIterable {
    case safetensors, torch, msn, idx, config, preprocessor, pretrainJSON, pretrainYAML

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
        }
    }
}

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
