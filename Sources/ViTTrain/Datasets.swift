import Foundation
import ViTIO
import ViTVision

/// Labelled images, decoded on demand.
public protocol LabeledImages: Sendable {
    var classNames: [String] { get }
    var labels: [Int] { get }
    /// The image at `index`, in mode L or RGB.
    func image(at index: Int) throws -> Image
}

extension LabeledImages {
    public var count: Int { labels.count }
}

/// torchvision's `ImageFolder`: one sub-folder per class (sorted by name, the label index), JPEG and PNG files
/// inside (sorted by path). Hidden files and other extensions are ignored.
public struct ImageFolder: LabeledImages {
    public let root: String
    public let classNames: [String]
    public let labels: [Int]
    public let paths: [String]
    /// Whether images keep one channel (for one-channel models) or are converted to RGB.
    public let grayscale: Bool

    public init(root: String, grayscale: Bool = false) throws {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        guard manager.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw TrainingError("\(root): no such directory (expected one sub-folder of images per class)")
        }
        let classes = try manager.contentsOfDirectory(atPath: root).filter { name in
            var isClass: ObjCBool = false
            return !name.hasPrefix(".") && manager.fileExists(atPath: root + "/" + name, isDirectory: &isClass) && isClass.boolValue
        }.sorted()
        guard !classes.isEmpty else { throw TrainingError("\(root): no class folders (expected one sub-folder of images per class)") }
        var (labels, paths) = ([Int](), [String]())
        for (label, name) in classes.enumerated() {
            let folder = root + "/" + name
            let files = try manager.contentsOfDirectory(atPath: folder).filter { file in
                !file.hasPrefix(".") && ImageDecoder.fileExtensions.contains((file as NSString).pathExtension.lowercased())
            }.sorted()
            guard !files.isEmpty else { throw TrainingError("\(folder): class folder '\(name)' has no images (\(ImageDecoder.fileExtensions.sorted().joined(separator: ", ")))") }
            paths += files.map { folder + "/" + $0 }
            labels += Array(repeating: label, count: files.count)
        }
        (self.root, classNames, self.labels, self.paths, self.grayscale) = (root, classes, labels, paths, grayscale)
    }

    public func image(at index: Int) throws -> Image {
        let decoded = try ImageDecoder.decode(path: paths[index])
        return grayscale ? decoded.convertedToGrayscale() : decoded.converted(toRGBWith: .drop)
    }
}

extension ImageFolder {
    /// A dataset folder's one layout, the official MSN code's ImageNet layout, for pretraining, its probe and
    /// `lowshot`: `FOLDER/train` and, optionally, `FOLDER/val`, each with one sub-folder per class.
    public static func splits(of folder: String, grayscale: Bool = false) throws -> (train: ImageFolder, validation: ImageFolder?) {
        let train = try trainingSplit(of: folder, grayscale: grayscale)
        return (train, isFolder(folder + "/val") ? try ImageFolder(root: folder + "/val", grayscale: grayscale) : nil)
    }

    /// `FOLDER/train` alone, for pretraining, which never reads `val`.
    public static func trainingSplit(of folder: String, grayscale: Bool = false) throws -> ImageFolder {
        guard isFolder(folder + "/train") else {
            throw TrainingError("\(folder): expected the layout FOLDER/train (one sub-folder per class) and optionally FOLDER/val, but there is no \(folder)/train")
        }
        return try ImageFolder(root: folder + "/train", grayscale: grayscale)
    }

    private static func isFolder(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }
}

/// Images held in memory (Fashion-MNIST, subsets).
public struct ImagesInMemory: LabeledImages {
    public let classNames: [String]
    public let labels: [Int]
    public let images: [Image]

    public init(classNames: [String], labels: [Int], images: [Image]) {
        (self.classNames, self.labels, self.images) = (classNames, labels, images)
    }

    public func image(at index: Int) throws -> Image { images[index] }
}

/// A subset of another dataset, by index.
public struct Subset: LabeledImages {
    public let base: LabeledImages
    public let indices: [Int]
    public let labels: [Int] // gathered once: callers index them per sample

    public init(_ base: LabeledImages, indices: [Int]) {
        let all = base.labels
        (self.base, self.indices, labels) = (base, indices, indices.map { all[$0] })
    }

    public var classNames: [String] { base.classNames }
    public func image(at index: Int) throws -> Image { try base.image(at: indices[index]) }
}

/// Fashion-MNIST as Debian's `dataset-fashion-mnist` installs it: gzip IDX files, 28×28 grayscale.
public enum FashionMNIST {
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
    public static let classNames = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

    /// The 60,000 training or 10,000 test images, as L images (or RGB for three-channel models).
    public static func load(train: Bool, directory: String = defaultDirectory, grayscale: Bool = true) throws -> ImagesInMemory {
        let prefix = directory + "/" + (train ? "train" : "t10k")
        guard FileManager.default.fileExists(atPath: prefix + "-images-idx3-ubyte.gz") else {
            throw TrainingError("\(prefix)-images-idx3-ubyte.gz not found: install Debian's dataset-fashion-mnist (apt-get install -y dataset-fashion-mnist)")
        }
        let images = try IDXFile(path: prefix + "-images-idx3-ubyte.gz")
        let labels = try IDXFile(path: prefix + "-labels-idx1-ubyte.gz")
        guard images.shape.count == 3, labels.shape == [images.shape[0]], labels.values.allSatisfy({ $0 < 10 }) else {
            throw TrainingError("\(prefix): expected N×H×W images and N labels in 0..<10, got \(images.shape) and \(labels.shape)")
        }
        let (height, width) = (images.shape[1], images.shape[2])
        guard images.shape[0] > 0, height > 0, width > 0 else {
            throw TrainingError("\(prefix)-images-idx3-ubyte.gz: \(images.shape[0]) images of \(height)×\(width) pixels; a dataset needs at least one image of at least 1×1")
        }
        let size = height * width
        let decoded = (0..<images.shape[0]).map { i in
            let gray = Image(width: width, height: height, mode: .L, pixels: Array(images.values[(i * size)..<((i + 1) * size)]))
            return grayscale ? gray : gray.converted(toRGBWith: .drop)
        }
        return ImagesInMemory(classNames: classNames, labels: labels.values.map(Int.init), images: decoded)
    }
}
