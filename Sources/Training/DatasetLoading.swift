import Datasets
import FileFormats
import Foundation

/// The training and test sets a config names (`data.dataset`), for the trainer and for
/// `ringsgd evaluate`.
extension TrainingConfig {
    /// Loads both splits. `log` receives one line about a computed normalisation.
    public func loadDatasets(log: (String) -> Void = { _ in }) throws -> (train: Dataset, test: Dataset) {
        switch dataset {
        case "text", "tokens":
            return try loadTokenWindows(log: log)
        case "synthetic":
            return (try synthetic(train: true), try synthetic(train: false))
        case "fashion-mnist":
            return (try fashionMNIST("train"), try fashionMNIST("t10k"))
        default:
            let train = try arrays(train: true), test = try arrays(train: false)
            guard train.shape == test.shape else {
                throw DatasetError("the test samples (\(testImages)) have shape \(test.shape), the training samples (\(trainImages)) \(train.shape); they must match")
            }
            let classes = self.classes > 0 ? self.classes : max(train.inferredClasses, test.inferredClasses)
            guard classes >= 2 else {
                throw DatasetError("\(trainLabels) holds a single class (every label is 0); a classifier needs ≥ 2 classes (or set data.classes)")
            }
            try test.checkFinite()
            if self.normalization != nil { try train.checkFinite() }
            let normalization = try self.normalization ?? measuredNormalization(of: train, log: log)
            return (try train.dataset(classes: classes, normalization: normalization),
                    try test.dataset(classes: classes, normalization: normalization))
        }
    }

    /// The test split alone — what an evaluation needs. For idx and npy data the training files
    /// are read only when the class count or the normalisation must be derived from them (an
    /// evaluation takes both from the checkpoint, so it runs where only the test files are).
    public func loadTestSet() throws -> Dataset {
        switch dataset {
        case "text", "tokens": return try loadTokenValidation()
        case "synthetic": return try synthetic(train: false)
        case "fashion-mnist": return try fashionMNIST("t10k")
        default:
            guard let normalization, classes > 0 else { return try loadDatasets().test }
            return try arrays(train: false).dataset(classes: classes, normalization: normalization)
        }
    }

    /// A split of the synthetic task: the test split shares the seed (the task) and starts
    /// past the training samples.
    private func synthetic(train: Bool) throws -> SyntheticDataset {
        try SyntheticDataset(count: train ? syntheticTrainSize : syntheticTestSize, features: syntheticFeatures,
                             classes: syntheticClasses, seed: seed, firstIndex: train ? 0 : syntheticTrainSize)
    }

    /// A split ("train" or "t10k") of the built-in Fashion-MNIST.
    private func fashionMNIST(_ split: String) throws -> ArrayDataset {
        try FashionMNIST.load(directory: dataDirectory, split: split, cacheDirectory: resolvedCacheDirectory,
                              normalization: normalization ?? FashionMNIST.normalization)
    }

    /// A split's files of `data.dataset: idx` or `npy`.
    private func arrays(train: Bool) throws -> LabelledArrays {
        let (images, labels, what) = train ? (trainImages, trainLabels, "data.train") : (testImages, testLabels, "data.test")
        guard dataset == "idx" else { return try LabelledArrays(npyImages: images, labels: labels, what: what) }
        return try LabelledArrays(idxImages: images, labels: labels, cacheDirectory: resolvedCacheDirectory, what: what,
                                  remedy: "check \(what)_images and \(what)_labels (unsigned-byte IDX files, gzipped or not)")
    }

    /// The training samples' mean and std, computed once and cached beside the IDX caches
    /// (named by the file's `FileSystem.fingerprint`: path, inode, size, modification time), so later runs and every rank
    /// after the first read 40 bytes instead of every value.
    private func measuredNormalization(of train: LabelledArrays, log: (String) -> Void) throws -> Normalization {
        let cacheDirectory = resolvedCacheDirectory
        let cached = (cacheDirectory as NSString).appendingPathComponent("normalization-\(FileSystem.fingerprint(of: train.sampleFile)).json")
        if let data = FileManager.default.contents(atPath: cached), let stored = try? JSONDecoder().decode(Normalization.self, from: data),
           stored.std > 0 {
            log(String(format: "data: normalised with the training samples' mean %.4f and std %.4f (cached in %@)", stored.mean, stored.std, cached))
            return stored
        }
        try train.checkFinite()   // the cache written below then stands for a checked file
        let measured = Normalization.measure(train.samples, count: train.valueCount)
        guard measured.std > 0 else {
            throw DatasetError("every value of \(train.sampleFile) is \(measured.mean): nothing to learn from; check the file")
        }
        // A cache that cannot be written costs a recomputation next time, nothing more.
        if (try? FileSystem.makeDirectory(cacheDirectory, what: "dataset cache (data.cache_dir)")) != nil,
           let data = try? JSONEncoder.sorted.encode(measured) {
            try? FileSystem.writeAtomically(Array(data), to: cached, what: "normalisation cache")
        }
        log(String(format: "data: normalised with the training samples' mean %.4f and std %.4f (computed; cached in %@; set data.mean and data.std to fix them)",
                   measured.mean, measured.std, cached))
        return measured
    }
}
