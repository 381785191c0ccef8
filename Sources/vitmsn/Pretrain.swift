import ArgumentParser
import Foundation
import ViTDistributed
import ViTTrain

struct Pretrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "MSN pretraining on an image folder or Fashion-MNIST, configured like the official msn_vits16.yaml (the same YAML, or JSON).",
        discussion: """
        The output directory gets a checkpoint per epoch (checkpoint-NNNNNN and the link 'last': the target \
        encoder as a Transformers model directory with msn_head.safetensors, plus what --resume needs), log.csv \
        (loss terms, schedules), probes.csv (low-shot probes) and curves.svg.

        Data-parallel under mpirun (mpirun -np N vitmsn pretrain --config FILE): criterion.batch_size is the global batch, each rank computes a slice of it, and the run equals the one-process run; rank 0 writes.
        """)

    @Option(help: "The run's config, YAML or JSON (meta, criterion, data, optimization sections).") var config: String
    @Flag(help: "Continue from the output directory's last checkpoint.") var resume = false
    @Flag(help: "Write into an output folder that already holds files (an earlier run's checkpoints are replaced).") var overwriteOutputDir = false
    @Option(help: "Stop after this optimizer step (saving a checkpoint), to continue later with --resume.") var stopAfterStep: Int?
    @Option(help: "Under mpirun: optimizer steps between checks that every rank holds the same parameters (0: never).") var checksumEvery = 100
    @OptionGroup var threading: ThreadOptions
    @OptionGroup var job: JobOptions

    func run() throws {
        ProcessSettings.keepFreedMemoryInHeap()
        let settings = try PretrainConfig(path: config)
        try job.run { communicator in try pretrain(settings, communicator: communicator) }
    }

    func pretrain(_ settings: PretrainConfig, communicator: Communicator) throws {
        let trainer = try Pretrainer(
            settings, resume: resume, overwriteOutputDir: overwriteOutputDir, parallelism: threading.parallelism(in: communicator), communicator: communicator)
        trainer.checksumEvery = checksumEvery
        if settings.probeEvery > 0 {
            let grayscale = trainer.model.encoder.config.numChannels == 1
            let (train, test) = try labelledPair(settings.dataset, grayscale: grayscale)
            if let test {
                trainer.probe = LowShot.probe(train: train, test: test, processor: trainer.processor, communicator: communicator)
            } else if communicator.rank == 0 {
                warn("\(settings.dataset) has no val/ folder: the low-shot probe (probe_every) is off")
            }
        }
        var bar: ProgressBar?
        var barEpoch = -1
        do {
            try trainer.run(stopAfterStep: stopAfterStep) { event in
                switch event {
                case let .started(images, stepsPerEpoch, resumedAt):
                    say("MSN pretraining on \(images) images, \(stepsPerEpoch) steps per epoch, \(settings.epochs) epochs" + (resumedAt.map { "; resuming after step \($0)" } ?? ""))
                case let .step(epoch, batch, batches, result, learningRate, momentum, imagesPerSecond):
                    if epoch != barEpoch {
                        bar = ProgressBar(total: batches, label: "epoch \(epoch + 1)", unit: "batch")
                        barEpoch = epoch
                    }
                    bar?.update(done: batch, status: String(
                        format: "loss %.3f (ce %.3f, me-max %.3f, anchor ent %.2f, target ent %.2f)  lr %.1e  m %.4f  %.0f img/s",
                        result.loss, result.ploss, result.rloss, result.sloss, result.targetEntropy, learningRate, momentum, imagesPerSecond))
                case let .epochEnded(epoch, seconds):
                    bar?.finish(done: nil)
                    bar = nil
                    say(String(format: "epoch %d done in %.0f s", epoch, seconds))
                case let .probe(epoch, report):
                    say("epoch \(epoch) low-shot probe: " + report.map { String(format: "%@ %.2f %%", $0.0, $0.1 * 100) }.joined(separator: ", "))
                case .saved(let path):
                    say("saved \(path)")
                }
            }
            let reducer = trainer.gradients
            if communicator.isDistributed && communicator.rank == 0 && reducer.reductionSeconds > 0 {
                say(String(format: "%d ranks; gradients all-reduced: %.2f MB per step, %.2f s in all, %.2f s of it (%.0f %%) not hidden behind the backward",
                           communicator.size, Double(reducer.floatsPerStep * 4) / 1e6, reducer.reductionSeconds, reducer.exposedSeconds,
                           100 * reducer.exposedSeconds / reducer.reductionSeconds))
            }
        } catch let error as TrainingError {
            bar?.finish(done: nil)
            throw CLIError(error.description + " (the last good checkpoint is \(settings.outputDir)/last)")
        }
    }
}

/// A line on stdout, written at once (so a log file follows a long run, unlike buffered `print`).
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

/// Training and test images: Fashion-MNIST's two files, or FOLDER/train and FOLDER/val when there is one.
func labelledPair(_ dataset: String, grayscale: Bool) throws -> (LabeledImages, LabeledImages?) {
    if dataset == "fashion-mnist" {
        return (try FashionMNIST.load(train: true, grayscale: grayscale), try FashionMNIST.load(train: false, grayscale: grayscale))
    }
    let splits = try ImageFolder.splits(of: dataset, grayscale: grayscale)
    return (splits.train, splits.validation)
}
