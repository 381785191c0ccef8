import Foundation
import ViTIO
import XCTest

/// The built `vitmsn` binary, run as a user runs it: its output files, stdout, stderr and exit codes.
final class CLITests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
    // The test bundle runs from the build products directory, next to the binary.
    static let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("vitmsn").path

    func fixture(_ path: String) -> String { Self.fixtures.appendingPathComponent(path).path }

    func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let (status, stdout, stderr) = try runForBytes(arguments)
        return (status, String(decoding: stdout, as: UTF8.self), stderr)
    }

    func runForBytes(_ arguments: [String]) throws -> (status: Int32, stdout: Data, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = arguments
        let (out, err) = (Pipe(), Pipe())
        (process.standardOutput, process.standardError) = (out, err)
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile(), stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, stdout, String(decoding: stderr, as: UTF8.self))
    }

    func temporaryPath(_ name: String) -> String {
        let path = NSTemporaryDirectory() + "vitmsn-cli-\(UUID().uuidString)-\(name)"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// `forward` reads the inputs file and writes last_hidden_state as Transformers computed it.
    func testForwardContract() throws {
        let output = temporaryPath("out.safetensors")
        let result = try run(["forward", "--model", fixture("models/base"), "--inputs", fixture("cases/base.inputs.safetensors"), "--output", output])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.contains("last_hidden_state [2, 17, 32]"), result.stdout)
        let written = try SafetensorsFile(path: output).floatTensor("last_hidden_state")
        let expected = try SafetensorsFile(path: fixture("cases/base.expected.safetensors")).floatTensor("last_hidden_state")
        XCTAssertLessThanOrEqual(written.maxAbsDifference(expected), 1e-5)
    }

    /// `classify --json` ranks every label of every readable photo, reports the unreadable one on stderr and
    /// exits 1.
    func testClassifyJSONAndABadImage() throws {
        let photos = [fixture("images/baseline_420.jpg"), "/no/such/photo.jpg", fixture("images/rgb.png")]
        let result = try run(["classify", "--model", fixture("models/classifier_single"), "--json", "--top-k", "3"] + photos)
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("/no/such/photo.jpg"), result.stderr)
        XCTAssertTrue(result.stderr.contains("1 image(s) could not be processed"), result.stderr)
        XCTAssertEqual(result.stdout.split(separator: "\n").count, 1, "compact JSON, one line")
        let parsed = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(parsed.map { $0["image"] as? String }, photos, "every image, in order, failed ones too")
        XCTAssertTrue((parsed[1]["error"] as? String)?.contains("no such file") == true, "\(parsed[1])")
        XCTAssertNil(parsed[1]["predictions"])
        for entry in [parsed[0], parsed[2]] {
            let predictions = try XCTUnwrap(entry["predictions"] as? [[String: Any]])
            XCTAssertEqual(predictions.count, 3)
            let scores = predictions.compactMap { $0["score"] as? Double }
            XCTAssertEqual(scores, scores.sorted(by: >))
        }
    }

    /// `convert --dtype int8` writes a directory that classifies as the int8 model does, keeping the processor
    /// config; a destination that holds files needs --overwrite-output-dir.
    func testConvertToInt8AndRefusingEarlierResults() throws {
        let (destination, image, processor) = (temporaryPath("int8"), fixture("images/rgb.png"), temporaryPath("processor"))
        try FileManager.default.copyItem(atPath: fixture("models/classifier_single"), toPath: processor)
        try #"{"size": {"height": 16, "width": 16}}"#.write(toFile: processor + "/preprocessor_config.json", atomically: true, encoding: .utf8)
        XCTAssertEqual(try run(["convert", processor, destination, "--dtype", "int8"]).status, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: destination + "/preprocessor_config.json"))
        let fromDirectory = try run(["classify", "--model", destination, "--json", image])
        let quantisedAtLoad = try run(["classify", "--model", processor, "--dtype", "int8", "--json", image])
        XCTAssertEqual(fromDirectory.status, 0, fromDirectory.stderr)
        XCTAssertEqual(fromDirectory.stdout, quantisedAtLoad.stdout)
        let again = try run(["convert", processor, destination])
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.stderr.contains("--overwrite-output-dir"), again.stderr)
        XCTAssertEqual(try run(["convert", processor, destination, "--overwrite-output-dir"]).status, 0)
    }

    /// `info` on a link (a run's `best`, a cache snapshot's files) reports what it points at, not the link.
    func testInfoFollowsLinks() throws {
        let directory = fixture("models/base")
        let links = temporaryPath("links")
        try FileManager.default.createDirectory(atPath: links, withIntermediateDirectories: true)
        for file in try FileManager.default.contentsOfDirectory(atPath: directory) {
            try FileManager.default.createSymbolicLink(atPath: links + "/" + file, withDestinationPath: directory + "/" + file)
        }
        let best = temporaryPath("best")
        try FileManager.default.createSymbolicLink(atPath: best, withDestinationPath: directory)
        func onDisk(_ path: String) throws -> String {
            let result = try run(["info", path])
            XCTAssertEqual(result.status, 0, result.stderr)
            return result.stdout.split(separator: "\n").first { $0.hasPrefix("on disk") }.map(String.init) ?? ""
        }
        let expected = try onDisk(directory)
        XCTAssertFalse(expected.contains(" 0.0 "), expected)
        XCTAssertEqual(try onDisk(best), expected)
        XCTAssertEqual(try onDisk(links), expected)
    }

    /// `info --json` says what the text says, as one object.
    func testInfoAsJSON() throws {
        let directory = fixture("models/base")
        let text = try run(["info", directory, "--tensors"]), json = try run(["info", directory, "--tensors", "--json"])
        XCTAssertEqual(json.status, 0, json.stderr)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let parameters = try XCTUnwrap(object["parameters"] as? Int)
        XCTAssertTrue(text.stdout.contains("parameters     \(parameters.formatted()) in \(object["tensor_count"] as? Int ?? -1) tensors"), text.stdout)
        let config = try XCTUnwrap(object["config"] as? [String: Any])
        XCTAssertTrue(text.stdout.contains("hidden \(config["hidden_size"] as? Int ?? -1),"), text.stdout)
        XCTAssertEqual((object["tensors"] as? [Any])?.count, object["tensor_count"] as? Int)
    }

    /// A dataset folder of two classes of three fixture photos in `train/` and `val/`.
    func twoClassDataset(_ name: String) throws -> String {
        let dataset = temporaryPath(name)
        let images = ["rgb.png", "gray.png", "baseline_420.jpg", "palette.png", "rgba.png", "baseline_444.jpg"]
        for split in ["train", "val"] {
            for (i, image) in images.enumerated() {
                let folder = dataset + "/\(split)/class\(i % 2)"
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
                try FileManager.default.copyItem(atPath: fixture("images/" + image), toPath: folder + "/\(i)." + (image as NSString).pathExtension)
            }
        }
        return dataset
    }

    /// `finetune --json` prints only its summary on stdout, the messages going to stderr.
    func testFineTuneSummaryAsJSON() throws {
        let dataset = try twoClassDataset("finetune-json"), output = temporaryPath("finetune-json-run")
        let result = try run(["finetune", "--model", fixture("models/base"), "--train-dir", dataset + "/train", "--validation-dir", dataset + "/val",
                              "--output-dir", output, "--epochs", "1", "--batch-size", "2", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let summary = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], result.stdout)
        XCTAssertEqual(summary["global_step"] as? Int, 3)
        XCTAssertEqual(summary["output_dir"] as? String, output)
        let best = try XCTUnwrap(summary["best_checkpoint"] as? String)
        XCTAssertTrue(FileManager.default.fileExists(atPath: output + "/" + (best as NSString).lastPathComponent + "/config.json"), best)
        let accuracy = try XCTUnwrap((summary["last_evaluation"] as? [String: Any])?["accuracy"] as? Double)
        XCTAssertEqual(accuracy, summary["best_accuracy"] as? Double)
        XCTAssertTrue(result.stderr.contains("saved "), result.stderr)
    }

    /// What a terminal of 50 columns (a pty from script(1)) shows of `command`, as lines split at \r and \n.
    func terminalLines(_ command: String) throws -> [String] {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: "/usr/bin/script"), "needs script(1) from util-linux")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        process.arguments = ["-q", "-c", "stty cols 50 rows 20; " + command, "/dev/null"]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let screen = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, screen)
        return screen.replacingOccurrences(of: "\u{1B}[K", with: "").unicodeScalars  // "\r\n" is one Character
            .split(whereSeparator: { $0 == "\r" || $0 == "\n" }).map { String(String.UnicodeScalarView($0)) }
    }

    /// On a 50-column terminal every redraw of the bar fits in 49 columns.
    func testProgressBarFitsTheTerminal() throws {
        let images = try (0..<6).map { i -> String in
            let path = temporaryPath("bar-\(i).png")
            try FileManager.default.copyItem(atPath: fixture("images/rgb.png"), toPath: path)
            return path
        }
        let lines = try terminalLines(([Self.binary, "embed", "--model", fixture("models/base"), "--output", temporaryPath("bar.npy"),
                                        "--format", "npy", "--batch-size", "1"] + images).joined(separator: " "))
        let redraws = lines.filter { $0.hasPrefix("embedding ") && $0.contains("/6") }
        XCTAssertFalse(redraws.isEmpty, "\(lines)")
        for line in redraws { XCTAssertLessThanOrEqual(line.count, 49, line) }
    }

    /// `download`'s bars each end their line: the result is a line of its own, not the tail of a bar.
    func testDownloadEndsEachBarBeforeTheResult() throws {
        let hub = Process(), (input, output) = (Pipe(), Pipe())
        hub.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        hub.arguments = ["python3", fixture("../../scripts/fake_hub.py"), "--root", fixture("models/base"), "--repo", "facebook/vit-msn-tiny", "--seconds", "60"]
        (hub.standardInput, hub.standardOutput) = (input, output)
        try hub.run()
        defer { try? input.fileHandleForWriting.close(); hub.waitUntilExit() }  // the hub stops when its stdin closes
        let port = try XCTUnwrap(Int(String(decoding: output.fileHandleForReading.availableData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        let lines = try terminalLines("HF_HOME=\(temporaryPath("hf")) HF_ENDPOINT=http://127.0.0.1:\(port) \(Self.binary) download facebook/vit-msn-tiny")
        XCTAssertTrue(lines.contains { $0.hasPrefix("facebook/vit-msn-tiny@main: ") }, "\(lines)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("model.safetensors ") && $0.contains(" in ") }, "each file's bar ends with its summary: \(lines)")
    }

    /// `lowshot --json` gives every split's accuracy, and the table's cells are their means.
    func testLowShotAsJSON() throws {
        let dataset = try twoClassDataset("lowshot")
        let arguments = ["lowshot", "--model", fixture("models/base"), "--dataset", dataset, "--shots", "1", "--splits", "2", "--shots-only"]
        let (text, json) = (try run(arguments), try run(arguments + ["--json"]))
        XCTAssertEqual(json.status, 0, json.stderr)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let row = try XCTUnwrap(((object["columns"] as? [[String: Any]])?.first?["rows"] as? [[String: Any]])?.first)
        XCTAssertEqual(row["protocol"] as? String, "1 per class")
        let accuracies = try XCTUnwrap(row["accuracies"] as? [Double])
        XCTAssertEqual(accuracies.count, 2)
        XCTAssertTrue(accuracies.allSatisfy { (0...1).contains($0) })
        let mean = try XCTUnwrap(row["mean"] as? Double), std = try XCTUnwrap(row["std"] as? Double)
        XCTAssertTrue(text.stdout.contains(String(format: "| 1 per class | %.1f ± %.1f |", mean * 100, std * 100)), text.stdout)
    }

    /// `bench --msn` times the batch size it is given, not the config's.
    func testBenchMSNHonoursBatch() throws {
        let folder = temporaryPath("images")
        for (i, image) in ["rgb.png", "gray.png", "baseline_420.jpg", "palette.png"].enumerated() {
            let classFolder = folder + "/train/class\(i % 2)"  // the dataset layout: FOLDER/train/CLASS
            try FileManager.default.createDirectory(atPath: classFolder, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: fixture("images/" + image), toPath: classFolder + "/" + image)
        }
        let config = temporaryPath("msn.json")
        try """
            {"meta": {"architecture": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32},
                      "hidden_dim": 16, "output_dim": 8, "output_dir": "\(temporaryPath("run"))"},
             "criterion": {"batch_size": 8, "num_proto": 8},
             "data": {"dataset": "\(folder)", "rand_size": 16, "focal_size": 8, "focal_views": 2},
             "optimization": {"epochs": 1, "warmup": 0, "probe_every": 0}}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let result = try run(["bench", "--msn", config, "--batch", "2", "--seconds", "0", "--json", "--threads", "1"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let summary = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(summary?["batch"] as? Int, 2, result.stdout)
    }

    /// `bench` on a classifier directory times its backbone without warning about the unused classifier.
    func testBenchOnAClassifierDoesNotWarn() throws {
        let result = try run(["bench", "--model", fixture("models/classifier_single"), "--batch", "1", "--seconds", "0", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertFalse(result.stderr.contains("not used"), result.stderr)
    }

    /// `init` writes a small classifier without Python, shaped by its options, that classifies at once; bad
    /// options are refused.
    func testInitWithShapeAndLabels() throws {
        let directory = temporaryPath("init")
        let result = try run(["init", "--preset", "fashion-mnist", "--output", directory, "--image-size", "16", "--patch-size", "8",
                              "--num-channels", "3", "--labels", "cat, dog,bird"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/config.json"))) as? [String: Any])
        XCTAssertEqual(config["image_size"] as? Int, 16)
        XCTAssertEqual(config["patch_size"] as? Int, 8)
        XCTAssertEqual(config["num_channels"] as? Int, 3)
        XCTAssertEqual(config["architectures"] as? [String], ["ViTMSNForImageClassification"])
        XCTAssertEqual((config["id2label"] as? [String: String])?["1"], "dog")
        let classified = try run(["classify", "--model", directory, "--json", fixture("images/rgb.png")])
        XCTAssertEqual(classified.status, 0, classified.stderr)
        XCTAssertTrue(classified.stdout.contains("\"bird\""), classified.stdout)
        XCTAssertNotEqual(try run(["init", "--preset", "fashion-mnist", "--output", temporaryPath("bad"), "--num-channels", "2"]).status, 0)
        let tooLarge = try run(["init", "--preset", "fashion-mnist", "--output", temporaryPath("bad2"), "--image-size", "8", "--patch-size", "16"])
        XCTAssertNotEqual(tooLarge.status, 0)
        XCTAssertTrue(tooLarge.stderr.contains("patch_size"), tooLarge.stderr)
    }

    /// Every option of the training commands says what it does.
    func testTrainingOptionsHaveHelp() throws {
        for command in ["finetune", "pretrain"] {
            let help = try run([command, "--help"]).stdout
            let lines = help.split(separator: "\n").map(String.init)
            for (i, line) in lines.enumerated() where line.hasPrefix("  -") && !line.contains("--help") {
                let words = (line.components(separatedBy: "(default:").first ?? line).split(separator: " ")
                let described = words.contains { !$0.hasPrefix("-") && !$0.hasPrefix("<") }  // text after the name and value
                    || (i + 1 < lines.count && lines[i + 1].hasPrefix("       "))            // or on the next line
                XCTAssertTrue(described, "\(command): '\(line)' has no help")
            }
        }
    }

    /// `--output -` and `--output /dev/stdout` stream the file to standard output (status lines go to
    /// stderr), and the device link is never replaced by a regular file.
    func testOutputToStandardOutput() throws {
        let file = temporaryPath("out.safetensors")
        let arguments = ["forward", "--model", fixture("models/base"), "--inputs", fixture("cases/base.inputs.safetensors"), "--output"]
        XCTAssertEqual(try run(arguments + [file]).status, 0)
        let expected = try Data(contentsOf: URL(fileURLWithPath: file))
        for target in ["-", "/dev/stdout"] {
            let result = try runForBytes(arguments + [target])
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertEqual(result.stdout, expected, "\(target): the same bytes as the file")
            XCTAssertTrue(result.stderr.contains("wrote"), result.stderr)
        }
        let link = try FileManager.default.attributesOfItem(atPath: "/dev/stdout")[.type] as? FileAttributeType
        XCTAssertEqual(link, .typeSymbolicLink, "/dev/stdout is still a link")
    }

    /// `classify --dir` takes every image below a folder (every format Pillow opens), in path order, and says
    /// which files it skipped.
    func testClassifyADirectory() throws {
        let folder = temporaryPath("photos")
        try FileManager.default.createDirectory(atPath: folder + "/sub", withIntermediateDirectories: true)
        let images = ["b.png": "rgb.png", "sub/a.jpg": "baseline_420.jpg", "c.webp": "lossy.webp", "d.GIF": "interlaced.gif",
                      "e.bmp": "rle8.bmp", "f.tif": "rgb_lzw.tiff"]
        for (name, source) in images { try FileManager.default.copyItem(atPath: fixture("images/" + source), toPath: folder + "/" + name) }
        try Data("notes".utf8).write(to: URL(fileURLWithPath: folder + "/notes.txt"))
        let result = try run(["classify", "--model", fixture("models/classifier_single"), "--json", "--dir", folder])
        XCTAssertEqual(result.status, 0, result.stderr)
        let parsed = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(parsed.map { $0["image"] as? String }, images.keys.sorted().map { folder + "/" + $0 })
        XCTAssertTrue(result.stderr.contains("skipped 1 file(s)") && result.stderr.contains("notes.txt"), result.stderr)
    }

    /// The documented completion scripts complete the commands and their options.
    func testShellCompletionScripts() throws {
        for shell in ["bash", "zsh", "fish"] {
            let result = try run(["--generate-completion-script", shell])
            XCTAssertEqual(result.status, 0, result.stderr)
            for word in ["finetune", "pretrain", "lowshot", "overwrite-output-dir"] { XCTAssertTrue(result.stdout.contains(word), "\(shell): \(word)") }
        }
    }

    func testVersion() throws {
        let result = try run(["--version"])
        XCTAssertEqual(result.status, 0)
        XCTAssertEqual(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "0.9.0")
    }

    /// Bad input is an error naming what is wrong, with a non-zero exit and nothing on stdout.
    func testBadInputExitsWithAMessage() throws {
        let missing = try run(["classify", "--model", "/no/such/model", fixture("images/rgb.png")])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("/no/such/model"), missing.stderr)
        let backbone = try run(["classify", "--model", fixture("models/base"), fixture("images/rgb.png")])
        XCTAssertNotEqual(backbone.status, 0)
        XCTAssertTrue(backbone.stderr.contains("no classification head"), backbone.stderr)
        let usage = try run(["classify", "--model", fixture("models/classifier_single"), "--top-k", "0", fixture("images/rgb.png")])
        XCTAssertNotEqual(usage.status, 0)
        XCTAssertTrue(usage.stderr.contains("--top-k"), usage.stderr)
        XCTAssertTrue(usage.stdout.isEmpty)
    }
}
