import Foundation
import XCTest
@testable import ViTServe
import ViTMSN

private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/models")

private func servedModel(_ name: String) throws -> ServedModel {
    let directory = fixtures.appendingPathComponent(name).path
    let model = try AnyViTMSN.load(directory: directory)
    return ServedModel(name: name, model: model, processor: try ImageProcessor.load(modelDirectory: directory, orDefaultFor: model.backbone.config))
}

final class InferenceProtocolTests: XCTestCase {
    private func header(_ object: [String: Any]) -> Data { try! JSONSerialization.data(withJSONObject: object) }

    func testJSONAndBinaryPixelValuesParseAlike() throws {
        let model = try servedModel("classifier_single")
        let values = (0..<768).map { Float($0) / 768 }
        let json = header(["id": "a", "inputs": [["name": "pixel_values", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": values.map(Double.init)]]])
        let fromJSON = try InferenceProtocol.parse(json, headerLength: nil, model: model, maxImages: 8)
        let binaryHeader = header(["inputs": [["name": "pixel_values", "shape": [1, 3, 16, 16], "datatype": "FP32", "parameters": ["binary_data_size": 768 * 4]]],
                                   "outputs": [["name": "logits", "parameters": ["binary_data": true]]]])
        let body = binaryHeader + values.withUnsafeBufferPointer { Data(buffer: $0) }
        let fromBinary = try InferenceProtocol.parse(body, headerLength: binaryHeader.count, model: model, maxImages: 8)
        guard case .pixelValues(let a) = fromJSON.input, case .pixelValues(let b) = fromBinary.input else { return XCTFail("pixel_values expected") }
        XCTAssertEqual(a[0].scalars, values)
        XCTAssertEqual(b[0].scalars, values)
        XCTAssertEqual(fromJSON.id, "a")
        XCTAssertEqual(fromJSON.outputs.map(\.name), [.logits, .probabilities], "a classifier's default outputs")
        XCTAssertEqual(fromBinary.outputs, [.init(name: .logits, binary: true, classification: nil)])
    }

    func testBytesInputsAreLengthPrefixedInBinary() throws {
        let model = try servedModel("classifier_single")
        let files = [Data([1, 2, 3]), Data(), Data([9])]
        var raw = Data()
        for file in files {
            withUnsafeBytes(of: UInt32(file.count).littleEndian) { raw.append(contentsOf: $0) }
            raw.append(file)
        }
        let head = header(["inputs": [["name": "images", "shape": [3], "datatype": "BYTES", "parameters": ["binary_data_size": raw.count]]]])
        guard case .images(let parsed) = try InferenceProtocol.parse(head + raw, headerLength: head.count, model: model, maxImages: 8).input else {
            return XCTFail("images expected")
        }
        XCTAssertEqual(parsed.map { Data($0) }, files)
        // An element announcing more bytes than are left is refused, naming the element.
        var short = raw
        short.removeLast()
        XCTAssertThrowsError(try InferenceProtocol.parse(
            header(["inputs": [["name": "images", "shape": [3], "datatype": "BYTES", "parameters": ["binary_data_size": short.count]]]]) + short,
            headerLength: head.count - String(raw.count).count + String(short.count).count, model: model, maxImages: 8)) {
            XCTAssertTrue("\($0)".contains("images'[2]"), "\($0)")
        }
    }

    /// The simple endpoints' multipart reader: the first non-empty part, after a preamble and empty parts; any
    /// header bytes (a header byte of 0xFF trapped MultipartKit, found by fuzz/parsers); malformed forms are 400s.
    func testMultipartFormsGiveTheirFirstFile() throws {
        let type = "multipart/form-data; boundary=XyZ"
        func form(_ text: String, _ file: [UInt8] = Array("PNGDATA".utf8), headers: [UInt8] = Array("Content-Type: image/png".utf8)) -> Data {
            Data(Array(text.utf8) + Array("--XyZ\r\n".utf8) + headers + Array("\r\n\r\n".utf8) + file + Array("\r\n--XyZ--\r\n".utf8))
        }
        XCTAssertEqual(try ModelServer.imageFile(body: form(""), contentType: type), Data("PNGDATA".utf8))
        XCTAssertEqual(try ModelServer.imageFile(body: form("preamble\r\n--XyZ\r\n\r\n\r\n"), contentType: type), Data("PNGDATA".utf8), "an empty part first")
        XCTAssertEqual(try ModelServer.imageFile(body: form("", headers: [0x43, 0x6F, 0xFF, 0x3A, 0x20, 0x78]), contentType: type), Data("PNGDATA".utf8))
        XCTAssertEqual(try ModelServer.imageFile(body: Data("raw".utf8), contentType: "image/png"), Data("raw".utf8))
        let malformed: [(Data, String, String)] = [
            (form(""), "multipart/form-data", "needs a boundary"),
            (Data("no delimiter here".utf8), type, "no '--XyZ' delimiter"),
            (Data("--XyZ".utf8), type, "no line break after a delimiter"),
            (Data("--XyZ\r\nContent-Type: image/png\r\n\r\nPNGDATA".utf8), type, "not closed by '--XyZ'"),
            (Data("--XyZ\r\n".utf8) + Data(repeating: 65, count: 20_000), type, "do not end within"),
            (Data("--XyZ--\r\n".utf8), type, "no file part"),
        ]
        for (body, contentType, reason) in malformed {
            XCTAssertThrowsError(try ModelServer.imageFile(body: body, contentType: contentType), reason) { error in
                XCTAssertTrue("\(error)".contains("400") || "\(error)".contains(reason), "\(error)")
                XCTAssertTrue("\(error)".contains(reason), "expected '\(reason)' in \(error)")
            }
        }
    }

    func testMalformedRequestsNameTheProblem() throws {
        let model = try servedModel("base")
        let cases: [(Data, Int?, String)] = [
            (Data("{".utf8), nil, "not valid JSON"),
            (header(["inputs": []]), nil, "expected one input"),
            (header(["inputs": [["name": "pixel_values", "shape": [1, 3, 16, 16], "datatype": "FP16", "data": [0]]]]), nil, "must be FP32"),
            (header(["inputs": [["name": "pixel_values", "shape": [-1, 3, 16, 16], "datatype": "FP32", "data": [0]]]]), nil, "non-negative sizes"),
            (header(["inputs": [["name": "pixel_values", "shape": [Int.max, Int.max], "datatype": "FP32", "data": [0]]]]), nil, "non-negative sizes"),
            (header(["inputs": [["name": "pixel_values", "shape": [99, 3, 16, 16], "datatype": "FP32", "data": [0]]]]), nil, "1 ≤ N ≤ 8"),
            (header(["inputs": [["name": "pixel_values", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": ["a"]]]]), nil, "must hold 768 numbers"),
            (header(["inputs": [["name": "pixel_values", "shape": [1, 3, 16, 16], "datatype": "FP32"]]]), nil, "needs either 'data' or parameters.binary_data_size"),
            (header(["inputs": [["name": "pixel_values", "shape": [1, 3, 16, 16], "datatype": "FP32", "parameters": ["binary_data_size": 12]]]]) + Data(count: 12), 104, "12 bytes for 768 FP32 values"),
            (header(["inputs": [["name": "tokens", "shape": [1], "datatype": "BYTES", "data": ["x"]]]]), nil, "has no input 'tokens'"),
            (header(["inputs": [["name": "images", "shape": [1], "datatype": "BYTES", "data": ["%%%"]]]]), nil, "is not base64"),
            (header(["inputs": [["name": "images", "shape": [1], "datatype": "BYTES", "data": ["AA=="]]], "outputs": [["name": "logits"]]]), nil, "has no output 'logits'"),
            (header(["inputs": [["name": "images", "shape": [1], "datatype": "BYTES", "data": ["AA=="]]]]), 9999, "Inference-Header-Content-Length is 9999"),
        ]
        for (body, headerLength, message) in cases {
            XCTAssertThrowsError(try InferenceProtocol.parse(body, headerLength: headerLength.map { $0 == 104 ? body.count - 12 : $0 }, model: model, maxImages: 8)) { error in
                XCTAssertEqual((error as? RequestError)?.status, 400)
                XCTAssertTrue("\(error)".contains(message), "\(error) should contain \(message)")
            }
        }
    }

    /// Binary outputs follow the JSON header, which says how many bytes each takes.
    func testBinaryResponseLayout() throws {
        let model = try servedModel("classifier_single")
        let request = InferenceProtocol.Request(id: "r", input: .images([]), outputs: [
            .init(name: .logits, binary: true, classification: nil), .init(name: .probabilities, binary: false, classification: 2),
        ])
        let results: [ImageOutputs] = [[.logits: [1, 2, 3, 4, 5], .probabilities: [0.1, 0.5, 0.2, 0.1, 0.1]]]
        let (body, headerLength) = try InferenceProtocol.response(request, model: model, results: results)
        let length = try XCTUnwrap(headerLength)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: body.prefix(length)) as? [String: Any])
        let outputs = try XCTUnwrap(json["outputs"] as? [[String: Any]])
        XCTAssertEqual((outputs[0]["parameters"] as? [String: Int])?["binary_data_size"], 20)
        XCTAssertEqual(body.count - length, 20)
        let logits = body.dropFirst(length).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        XCTAssertEqual(logits, [1, 2, 3, 4, 5])
        XCTAssertEqual(outputs[1]["shape"] as? [Int], [1, 2])
        let classes = try XCTUnwrap(outputs[1]["data"] as? [String])
        XCTAssertEqual(classes.count, 2)
        XCTAssertTrue(classes[0].hasPrefix("0.500000:1:"), classes[0])
    }
}

final class DynamicBatcherTests: XCTestCase {
    private func images(_ count: Int, seed: Float) -> [Tensor] {
        (0..<count).map { i in Tensor(shape: [3, 16, 16], scalars: (0..<768).map { sin(Float($0) * 0.37 + Float(i) + seed) }) }
    }

    /// Requests that share a forward get what each would get alone, bit for bit.
    func testBatchedResultsEqualOneAtATime() async throws {
        let model = try servedModel("classifier_single")
        let metrics = ServerMetrics()
        let batcher = DynamicBatcher(model: model, settings: .init(maxBatchSize: 8, maxQueueDelay: 0.2, maxQueue: 64), metrics: metrics.model("m"))
        defer { batcher.stop() }
        let inputs = (0..<6).map { images($0 % 3 + 1, seed: Float($0)) }
        let alone = try inputs.map { try model.run(Tensor.stacked($0), outputs: [.logits, .embedding]) }
        let arrivals = inputs.map { _ in batcher.arrive() } // six requests on their way: a forming batch waits for them
        let together = try await withThrowingTaskGroup(of: (Int, [ImageOutputs]).self) { group in
            for (i, input) in inputs.enumerated() {
                group.addTask { (i, try await batcher.submit(input, outputs: [.logits, .embedding], timeout: 10, arrival: arrivals[i])) }
            }
            return try await group.reduce(into: [Int: [ImageOutputs]]()) { $0[$1.0] = $1.1 }
        }
        for i in inputs.indices {
            XCTAssertEqual(together[i]?.map { $0[.logits]! }, alone[i].map { $0[.logits]! }, "request \(i)")
            XCTAssertEqual(together[i]?.map { $0[.embedding]! }, alone[i].map { $0[.embedding]! }, "request \(i)")
        }
        XCTAssertTrue(metrics.text.contains(#"vitmsn_batch_size_images_sum{model="m"} 12.0"#), metrics.text)
        XCTAssertFalse(metrics.text.contains(#"vitmsn_batch_size_images_count{model="m"} 6"#), "six requests, fewer forwards")
    }

    /// With no other request on its way, waiting cannot fill a batch: a lone request runs at once, not after
    /// the queue delay (5 s here).
    func testALoneRequestDoesNotWaitForTheQueueDelay() async throws {
        let batcher = DynamicBatcher(model: try servedModel("base"), settings: .init(maxBatchSize: 8, maxQueueDelay: 5, maxQueue: 8), metrics: ServerMetrics().model("m"))
        defer { batcher.stop() }
        let started = Date()
        let arrival = batcher.arrive()
        _ = try await batcher.submit(images(1, seed: 0), outputs: [.embedding], timeout: 10, arrival: arrival)
        XCTAssertLessThan(Date().timeIntervalSince(started), 2.5, "the request waited for the queue delay")
    }

    func testFullQueueAndTimeout() async throws {
        let model = try servedModel("base")
        let batcher = DynamicBatcher(model: model, settings: .init(maxBatchSize: 64, maxQueueDelay: 1.0, maxQueue: 2), metrics: ServerMetrics().model("m"))
        defer { batcher.stop() }
        let two = images(2, seed: 0)
        let coming = batcher.arrive() // another request on its way, so the batch waits to fill
        defer { coming.leave() }
        async let first = batcher.submit(two, outputs: [.embedding], timeout: 0.2)
        try await Task.sleep(nanoseconds: 50_000_000)
        do {
            _ = try await batcher.submit(images(1, seed: 1), outputs: [.embedding], timeout: 5)
            XCTFail("the queue holds two images")
        } catch let error as BatchError {
            XCTAssertEqual(error, .queueFull(2))
        }
        do {
            _ = try await first
            XCTFail("the batch waits 1 s to fill, the request 0.2 s")
        } catch let error as BatchError {
            XCTAssertEqual(error, .timedOut)
        }
    }
}
