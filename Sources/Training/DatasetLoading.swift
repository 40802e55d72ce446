import Foundation

/// The training and test sets a config names (`data.dataset`), for the trainer and for
/// `ringsgd evaluate`.
extension TrainingConfig {
    /// Loads both splits. `log` receives one line about a computed normalisation.
    public func loadDatasets(log: (String) -> Void = { _ in }) throws -> (train: Dataset, test: Dataset) {
        let cache = resolvedCacheDirectory
        switch dataset {
        case "synthetic":
            let train = try SyntheticDataset(count: syntheticTrainSize, features: syntheticFeatures,
                                             classes: syntheticClasses, seed: seed)
            let test = try SyntheticDataset(count: max(syntheticTestSize, 1), features: syntheticFeatures,
                                            classes: syntheticClasses, seed: seed, firstIndex: syntheticTrainSize)
            return (train, test)
        case "fashion-mnist":
            let normalization = self.normalization ?? FashionMNIST.normalization
            return (try FashionMNIST.load(directory: dataDirectory, split: "train", cacheDirectory: cache, normalization: normalization),
                    try FashionMNIST.load(directory: dataDirectory, split: "t10k", cacheDirectory: cache, normalization: normalization))
        default:
            let train: LabelledArrays, test: LabelledArrays
            if dataset == "idx" {
                let remedy = "check data.train_images, data.train_labels, data.test_images and data.test_labels (unsigned-byte IDX files, gzipped or not)"
                train = try LabelledArrays(idxImages: trainImages, labels: trainLabels, cacheDirectory: cache, what: "data.train", remedy: remedy)
                test = try LabelledArrays(idxImages: testImages, labels: testLabels, cacheDirectory: cache, what: "data.test", remedy: remedy)
            } else {
                train = try LabelledArrays(npyImages: trainImages, labels: trainLabels, what: "data.train")
                test = try LabelledArrays(npyImages: testImages, labels: testLabels, what: "data.test")
            }
            guard train.shape == test.shape else {
                throw DatasetError("the test samples (\(testImages)) have shape \(test.shape), the training samples (\(trainImages)) \(train.shape); they must match")
            }
            let classes = self.classes > 0 ? self.classes : max(train.inferredClasses, test.inferredClasses)
            guard classes >= 2 else {
                throw DatasetError("\(trainLabels) holds a single class (every label is 0); a classifier needs ≥ 2 classes (or set data.classes)")
            }
            let normalization = try self.normalization ?? measuredNormalization(of: train, cacheDirectory: cache, log: log)
            return (try train.dataset(classes: classes, normalization: normalization),
                    try test.dataset(classes: classes, normalization: normalization))
        }
    }

    /// The test split alone — what an evaluation needs. For idx and npy data the training files
    /// are read only when the class count or the normalisation must be derived from them (an
    /// evaluation takes both from the checkpoint, so it runs where only the test files are).
    public func loadTestSet() throws -> Dataset {
        switch dataset {
        case "synthetic":
            return try SyntheticDataset(count: max(syntheticTestSize, 1), features: syntheticFeatures,
                                        classes: syntheticClasses, seed: seed, firstIndex: syntheticTrainSize)
        case "fashion-mnist":
            return try FashionMNIST.load(directory: dataDirectory, split: "t10k", cacheDirectory: resolvedCacheDirectory,
                                         normalization: normalization ?? FashionMNIST.normalization)
        default:
            guard let normalization, classes > 0 else { return try loadDatasets().test }
            let test = dataset == "idx"
                ? try LabelledArrays(idxImages: testImages, labels: testLabels, cacheDirectory: resolvedCacheDirectory, what: "data.test",
                                     remedy: "check data.test_images and data.test_labels (unsigned-byte IDX files, gzipped or not)")
                : try LabelledArrays(npyImages: testImages, labels: testLabels, what: "data.test")
            return try test.dataset(classes: classes, normalization: normalization)
        }
    }

    /// The training samples' mean and std, computed once and cached beside the IDX caches
    /// (keyed by the file's path, size and modification time), so later runs and every rank
    /// after the first read 40 bytes instead of every value.
    private func measuredNormalization(of train: LabelledArrays, cacheDirectory: String, log: (String) -> Void) throws -> Normalization {
        let attributes = (try? FileManager.default.attributesOfItem(atPath: train.sampleFile)) ?? [:]
        let key = "\(train.sampleFile)|\((attributes[.size] as? Int) ?? 0)|\(((attributes[.modificationDate] as? Date) ?? .distantPast).timeIntervalSince1970)"
        let cached = (cacheDirectory as NSString).appendingPathComponent(String(format: "normalization-%016llx.json", FastHash.hash(Array(key.utf8))))
        if let data = FileManager.default.contents(atPath: cached), let stored = try? JSONDecoder().decode(Normalization.self, from: data),
           stored.std > 0 {
            log(String(format: "data: normalised with the training samples' mean %.4f and std %.4f (cached in %@)", stored.mean, stored.std, cached))
            return stored
        }
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
