import Foundation
import ViTIO
import ViTMSN

/// A request the server refuses, with the status it answers and a message naming the problem.
public struct RequestError: Error, CustomStringConvertible, Sendable {
    public let status: Int
    public let message: String
    public var retryAfterSeconds: Int?

    init(_ status: Int, _ message: String, retryAfterSeconds: Int? = nil) {
        (self.status, self.message, self.retryAfterSeconds) = (status, message, retryAfterSeconds)
    }

    public var description: String { message }
}

/// The Open Inference Protocol (KServe v2) inference request and response, in JSON and with Triton's binary
/// tensor extension: the body is a JSON header of `Inference-Header-Content-Length` bytes followed by the
/// tensors whose `parameters.binary_data_size` says how many bytes they take, in input order.
enum InferenceProtocol {
    /// What a request asks for, its tensors read and checked against the model.
    struct Request {
        var id: String?
        var input: Input
        var outputs: [RequestedOutput]
    }

    enum Input {
        case pixelValues([Tensor])    // `pixel_values` FP32 [N, C, H, W]: N tensors (C, H, W)
        case images([Data])           // `images` BYTES [N]: encoded files
    }

    struct RequestedOutput: Equatable {
        var name: OutputName
        var binary: Bool
        var classification: Int?  // Triton's classification extension: the top k as "score:index:label"
    }

    /// The JSON header as sent.
    private struct Header: Decodable {
        var id: String?
        var parameters: Parameters?
        var inputs: [TensorHeader]
        var outputs: [OutputHeader]?
    }

    private struct TensorHeader: Decodable {
        var name: String
        var shape: [Int]
        var datatype: String
        var parameters: Parameters?
        var data: TensorData?
    }

    private struct OutputHeader: Decodable {
        var name: String
        var parameters: Parameters?
    }

    private struct Parameters: Decodable {
        var binaryDataSize: Int?
        var binaryData: Bool?
        var binaryDataOutput: Bool?
        var classification: Int?

        enum CodingKeys: String, CodingKey {
            case binaryDataSize = "binary_data_size", binaryData = "binary_data"
            case binaryDataOutput = "binary_data_output", classification
        }
    }

    /// `data` in JSON: numbers or strings, flat or nested row-major.
    private enum TensorData: Decodable {
        case numbers([Float])
        case strings([String])

        init(from decoder: Decoder) throws {
            var numbers: [Float] = [], strings: [String] = []
            func collect(_ decoder: Decoder) throws {
                if var list = try? decoder.unkeyedContainer() {
                    while !list.isAtEnd { try collect(list.superDecoder()) }
                    return
                }
                let value = try decoder.singleValueContainer()
                if let number = try? value.decode(Float.self) { numbers.append(number) } else { strings.append(try value.decode(String.self)) }
            }
            try collect(decoder)
            guard numbers.isEmpty || strings.isEmpty else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "mixes numbers and strings"))
            }
            self = strings.isEmpty ? .numbers(numbers) : .strings(strings)
        }
    }

    /// Parses a request body for `model`. `headerLength` is `Inference-Header-Content-Length` (nil: all JSON).
    static func parse(_ body: Data, headerLength: Int?, model: ServedModel, maxImages: Int) throws -> Request {
        let jsonLength = headerLength ?? body.count
        guard jsonLength >= 0, jsonLength <= body.count else {
            throw RequestError(400, "Inference-Header-Content-Length is \(jsonLength) but the body has \(body.count) bytes")
        }
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: body.prefix(jsonLength))
        } catch let error as DecodingError {
            throw RequestError(400, "the inference request: \(describeDecodingError(error))")
        }
        guard header.inputs.count == 1, let tensor = header.inputs.first else {
            throw RequestError(400, "expected one input, 'pixel_values' or 'images'; got \(header.inputs.count)")
        }
        var binary = body.dropFirst(jsonLength)
        let input = try readInput(tensor, binary: &binary, model: model, maxImages: maxImages)
        guard binary.isEmpty else { throw RequestError(400, "\(binary.count) bytes of binary data follow the inputs that no input claims") }
        let binaryByDefault = header.parameters?.binaryDataOutput ?? false
        let outputs = try (header.outputs ?? model.defaultOutputs.map { OutputHeader(name: $0.rawValue) }).map { requested in
            guard let name = OutputName(rawValue: requested.name), model.outputs.contains(name) else {
                throw RequestError(400, "model '\(model.name)' has no output '\(requested.name)'; it has \(model.outputs.map(\.rawValue))")
            }
            if let k = requested.parameters?.classification {
                guard k > 0, name == .logits || name == .probabilities else {
                    throw RequestError(400, "output '\(requested.name)': classification needs a positive count on logits or probabilities")
                }
            }
            return RequestedOutput(name: name, binary: requested.parameters?.binaryData ?? binaryByDefault, classification: requested.parameters?.classification)
        }
        guard Set(outputs.map(\.name)).count == outputs.count else { throw RequestError(400, "an output is requested twice") }
        return Request(id: header.id, input: input, outputs: outputs)
    }

    private static func readInput(_ tensor: TensorHeader, binary: inout Data, model: ServedModel, maxImages: Int) throws -> Input {
        let name = tensor.name
        guard let count = tensor.shape.reduce(Optional(1), { product, side in
            side < 0 ? nil : product.flatMap { $0.multipliedReportingOverflow(by: side).overflow ? nil : $0 * side }
        }) else { throw RequestError(400, "input '\(name)': shape \(tensor.shape) is not a list of non-negative sizes") }
        let binarySize = tensor.parameters?.binaryDataSize
        guard (binarySize == nil) != (tensor.data == nil) else {
            throw RequestError(400, "input '\(name)' needs either 'data' or parameters.binary_data_size, not \(tensor.data == nil ? "neither" : "both")")
        }
        var raw = Data()
        if let binarySize {
            guard binarySize >= 0, binarySize <= binary.count else {
                throw RequestError(400, "input '\(name)': binary_data_size is \(binarySize) but \(binary.count) bytes follow the header")
            }
            raw = binary.prefix(binarySize)
            binary = binary.dropFirst(binarySize)
        }
        switch name {
        case "pixel_values":
            guard tensor.datatype == "FP32" else { throw RequestError(400, "input 'pixel_values' must be FP32, not \(tensor.datatype)") }
            let shape = model.inputShape
            guard tensor.shape.count == 4, Array(tensor.shape.dropFirst()) == shape, (1...maxImages).contains(tensor.shape[0]) else {
                throw RequestError(400, "input 'pixel_values' must have shape [N, \(shape.map(String.init).joined(separator: ", "))] with 1 ≤ N ≤ \(maxImages), not \(tensor.shape)")
            }
            let values: [Float]
            if binarySize != nil {
                guard raw.count == count * 4 else { throw RequestError(400, "input 'pixel_values': \(raw.count) bytes for \(count) FP32 values") }
                values = raw.withUnsafeBytes { bytes in (0..<count).map { Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) } }
            } else {
                guard case .numbers(let numbers) = tensor.data!, numbers.count == count else {
                    throw RequestError(400, "input 'pixel_values': 'data' must hold \(count) numbers")
                }
                values = numbers
            }
            guard values.allSatisfy(\.isFinite) else { throw RequestError(400, "input 'pixel_values' holds NaN or infinity") }
            let image = shape.reduce(1, *)
            return .pixelValues((0..<tensor.shape[0]).map { Tensor(shape: shape, scalars: Array(values[($0 * image)..<(($0 + 1) * image)])) })
        case "images":
            guard tensor.datatype == "BYTES" else { throw RequestError(400, "input 'images' must be BYTES (encoded image files), not \(tensor.datatype)") }
            guard (tensor.shape.count == 1 || (tensor.shape.count == 2 && tensor.shape[1] == 1)), (1...maxImages).contains(count) else {
                throw RequestError(400, "input 'images' must have shape [N] or [N, 1] with 1 ≤ N ≤ \(maxImages), not \(tensor.shape)")
            }
            let files: [Data]
            if binarySize != nil {
                files = try lengthPrefixed(raw, count: count)
            } else {
                // JSON carries no raw bytes: each element is the file in base64.
                guard case .strings(let strings) = tensor.data!, strings.count == count else {
                    throw RequestError(400, "input 'images': 'data' must hold \(count) base64 strings")
                }
                files = try strings.enumerated().map { index, text in
                    guard let file = Data(base64Encoded: text) else { throw RequestError(400, "input 'images'[\(index)] is not base64") }
                    return file
                }
            }
            return .images(files)
        default:
            throw RequestError(400, "model '\(model.name)' has no input '\(name)'; it takes 'pixel_values' (FP32) or 'images' (BYTES)")
        }
    }

    /// BYTES elements in the binary extension: each a little-endian UInt32 length, then that many bytes.
    private static func lengthPrefixed(_ raw: Data, count: Int) throws -> [Data] {
        var files: [Data] = []
        var offset = raw.startIndex
        for index in 0..<count {
            guard raw.endIndex - offset >= 4 else { throw RequestError(400, "input 'images'[\(index)]: the binary data ends before its length") }
            let length = Int(raw[offset..<(offset + 4)].withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) })
            offset += 4
            guard raw.endIndex - offset >= length else { throw RequestError(400, "input 'images'[\(index)]: \(length) bytes announced, \(raw.endIndex - offset) left") }
            files.append(raw[offset..<(offset + length)])
            offset += length
        }
        guard offset == raw.endIndex else { throw RequestError(400, "input 'images': \(raw.endIndex - offset) bytes after the last element") }
        return files
    }

    // MARK: response

    private struct ResponseHeader: Encodable {
        var modelName: String
        var modelVersion = "1"
        var id: String?
        var outputs: [OutputTensor]

        enum CodingKeys: String, CodingKey { case modelName = "model_name", modelVersion = "model_version", id, outputs }
    }

    private struct OutputTensor: Encodable {
        var name: String
        var datatype: String
        var shape: [Int]
        var data: ResponseData?
        var parameters: [String: Int]?
    }

    private enum ResponseData: Encodable {
        case numbers([Float])
        case strings([String])

        func encode(to encoder: Encoder) throws {
            switch self {
            case .numbers(let values): try values.encode(to: encoder)
            case .strings(let values): try values.encode(to: encoder)
            }
        }
    }

    /// The response body, and the JSON header's length when binary tensors follow it.
    static func response(_ request: Request, model: ServedModel, results: [ImageOutputs]) throws -> (body: Data, headerLength: Int?) {
        var tensors: [OutputTensor] = []
        var binary = Data()
        for requested in request.outputs {
            let rows = results.map { $0[requested.name] ?? [] }
            let shape = [rows.count] + model.shape(of: requested.name, sequence: rows.first.map { $0.count / model.config.hiddenSize })
            var data: ResponseData
            var datatype = "FP32"
            var outputShape = shape
            if let k = requested.classification {
                let top = min(k, model.config.numLabels)
                let scores = requested.name == .probabilities ? rows : rows.map(model.function.scores)
                data = .strings(scores.flatMap { row in
                    Prediction.rankedIndices(row, topK: top).map { "\(String(format: "%f", Double(row[$0]))):\($0):\(model.config.label($0))" }
                })
                (datatype, outputShape) = ("BYTES", [rows.count, top])
            } else {
                data = .numbers(rows.flatMap { $0 })
            }
            if requested.binary {
                let bytes = binaryBytes(data)
                tensors.append(OutputTensor(name: requested.name.rawValue, datatype: datatype, shape: outputShape, parameters: ["binary_data_size": bytes.count]))
                binary.append(bytes)
            } else {
                tensors.append(OutputTensor(name: requested.name.rawValue, datatype: datatype, shape: outputShape, data: data))
            }
        }
        let header = try sortedJSON(ResponseHeader(modelName: model.name, id: request.id, outputs: tensors))
        return binary.isEmpty ? (header, nil) : (header + binary, header.count)
    }

    private static func binaryBytes(_ data: ResponseData) -> Data {
        switch data {
        case .numbers(let values):
            return values.withUnsafeBufferPointer { Data(buffer: $0) } // little-endian on every platform Swift runs here
        case .strings(let values):
            var bytes = Data()
            for value in values {
                let utf8 = Data(value.utf8)
                withUnsafeBytes(of: UInt32(utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
                bytes.append(utf8)
            }
            return bytes
        }
    }
}

/// JSON with its keys in a fixed order, so that equal answers are equal bytes.
func sortedJSON<T: Encodable>(_ value: T) throws -> Data {
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    return try encoder.encode(value)
}
