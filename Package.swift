// swift-tools-version:6.0
import PackageDescription

// Layers, from the bottom: ViTCore (tensor + kernels) → ViTIO (checkpoint files) → ViTModel (the model, with its
// backward passes) → ViTMSN (the pipelines; re-exports the model, vision and core: what an app imports) →
// ViTTrain (optimisers, data, fine-tuning, MSN pretraining, low-shot evaluation; data-parallel over ViTDistributed,
// MPI loaded at run time) → vitmsn (the CLI, a thin shell);
// ViTServe (the model server: Open Inference Protocol over Hummingbird, dynamic batching) sits on ViTMSN;
// ViTVision (image decoding and preprocessing) and ViTHub (the Hugging Face cache and downloads) sit beside ViTIO.
// The GEMM is the project's own (CKernels), dispatched at run time to AVX-512, AVX2+FMA or a portable build.
let package = Package(
    name: "swift-vitmsn",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "ViTMSN", targets: ["ViTMSN"]),
        .library(name: "ViTTrain", targets: ["ViTTrain"]),
        .library(name: "ViTServe", targets: ["ViTServe"]),
        .executable(name: "vitmsn", targets: ["vitmsn"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        .target(name: "CKernels"),
        .target(name: "ViTCore", dependencies: ["CKernels"]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .target(name: "ViTIO", dependencies: ["ViTCore", "CZlib", .product(name: "Yams", package: "Yams")]),
        .target(
            name: "CImageCodecs",
            linkerSettings: [
                .linkedLibrary("jpeg"), .linkedLibrary("png16"), .linkedLibrary("webp"), .linkedLibrary("webpdemux"),
                .linkedLibrary("gif"), .linkedLibrary("tiff"),
            ]
        ),
        .target(name: "ViTVision", dependencies: ["ViTCore", "ViTIO", "CImageCodecs"]),
        .target(name: "ViTModel", dependencies: ["ViTCore", "ViTIO"]),
        .target(name: "ViTHub", dependencies: ["ViTIO", .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "ViTMSN", dependencies: ["ViTCore", "ViTIO", "ViTHub", "ViTModel", "ViTVision"]),
        .target(name: "ViTDistributed"),
        .target(name: "ViTTrain", dependencies: ["ViTMSN", "ViTIO", "ViTDistributed", "CKernels"]),
        .target(
            name: "ViTServe",
            dependencies: [
                "ViTMSN", "ViTIO",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ]
        ),
        .executableTarget(
            name: "vitmsn",
            dependencies: ["ViTMSN", "ViTVision", "ViTTrain", "ViTServe", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "ViTCoreTests", dependencies: ["ViTCore"]),
        .testTarget(name: "ViTIOTests", dependencies: ["ViTIO"]),
        .testTarget(name: "ViTModelTests", dependencies: ["ViTModel"]),
        .testTarget(name: "ViTHubTests", dependencies: ["ViTHub", "ViTModel"]),
        .testTarget(name: "ViTMSNTests", dependencies: ["ViTMSN"]),
        .testTarget(name: "ViTVisionTests", dependencies: ["ViTVision", "ViTIO"]),
        .testTarget(name: "ViTTrainTests", dependencies: ["ViTTrain", "ViTDistributed"]),
        .testTarget(name: "ViTServeTests", dependencies: ["ViTServe"]),
        .testTarget(name: "vitmsnTests", dependencies: ["vitmsn", "ViTIO"]),
    ]
)
