// swift-tools-version:6.0
// The libFuzzer harness of the project's file and request parsers, a package of its own so that its build flags stay
// out of swift-vitmsn's: `swift build --package-path fuzz/parsers --sanitize=fuzzer --sanitize=address`
// (scripts/fuzz.sh builds and runs it).
import Foundation
import PackageDescription

let swiftVitmsn = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized

let package = Package(
    name: "vitmsn-fuzz",
    dependencies: [.package(path: swiftVitmsn.path)],
    targets: [
        .executableTarget(
            name: "fuzz-parsers", dependencies: [
                .product(name: "ViTTrain", package: swiftVitmsn.lastPathComponent),
                .product(name: "ViTServe", package: swiftVitmsn.lastPathComponent),
            ],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]),  // libFuzzer provides main
    ]
)
