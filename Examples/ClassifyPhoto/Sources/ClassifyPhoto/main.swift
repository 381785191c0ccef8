import Foundation
import ViTMSN

struct Classified: Encodable { let image: String; let predictions: [Prediction] }

let paths = Array(CommandLine.arguments.dropFirst(2))
guard CommandLine.arguments.count > 2 else { fatalError("usage: ClassifyPhoto MODEL IMAGE...") }
let classify = try ImageClassificationPipeline(model: CommandLine.arguments[1])
let results = classify(paths.map(ImageInput.file), topK: 5)
let classified = try zip(paths, results).map { Classified(image: $0, predictions: try $1.get()) }
let encoder = JSONEncoder()
encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
print(String(decoding: try encoder.encode(classified), as: UTF8.self))
