"""Predicting your own photos: prepared exactly as the test split is, with the run's saved
preprocessing and decision; files, folders and globs."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from catsdogs_helpers import (
    calibration,
    config,
    evaluation,
    models,
    predicting,
    training,
    transforms,
    workflow,
)


def _random_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.create_model("resnet9", 2).eval()


@pytest.mark.parametrize("tta", ["none", "flip", "flip_crops"])
def test_own_photos_get_the_test_splits_probabilities(petimages, monkeypatch, tta):
    """The same photos through the test loader and through predict_files: same numbers."""
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    cfg = config.make_config(RUN_NAME="parity", IMAGE_SIZE=48, TTA=tta, NUM_WORKERS=0)
    split = workflow.ensure_split(cfg, progress=False)
    cache = workflow.ensure_cache(cfg, split, progress=False)
    test_set = workflow.make_datasets(cfg, split, cache)["test"]
    loader = workflow.make_loaders(cfg, {"test": test_set}, batch_size=8)["test"]
    model, device = _random_model(), torch.device("cpu")
    preprocessing = transforms.preprocessing_for(cfg)
    probs, _, positions = evaluation.predict(model, loader, device, preprocessing)
    files = [str(petimages / p) for p in workflow.dataset_paths(cache, test_set)[positions]]

    classifier = predicting.Classifier(
        model, ("Cat", "Dog"), preprocessing, calibration.Decision(), device
    )
    table = predicting.predict_files(classifier, files, batch_size=5)
    assert table["path"].tolist() == files and (table["error"] == "").all()
    np.testing.assert_allclose(table[["p_Cat", "p_Dog"]].to_numpy(), probs, atol=1e-5, rtol=0)
    assert probs.std() > 0, "a model whose outputs vary, or the comparison says nothing"


def test_preprocessing_is_saved_with_the_model_and_loaded_with_the_decision(petimages, monkeypatch):
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    cfg = config.make_config(RUN_NAME="saved", IMAGE_SIZE=40, EPOCHS=1, NUM_WORKERS=0)
    workflow.train_run(cfg, progress=False)
    checkpoint = training.load_checkpoint(cfg.run_dir / "best.pt")
    assert predicting.preprocessing_of(checkpoint) == transforms.preprocessing_for(cfg)
    assert checkpoint["preprocessing"]["cache_size"] == cfg.cache_size == 46

    decision = calibration.Decision(2.0, "Cat", 0.9, "99% precision for Cat", 0.99, 0.5)
    calibration.save_decision(cfg.run_dir, calibration.Decision(2.0))
    calibration.save_decision(cfg.run_dir, decision, name="Cat-99")
    classifier = predicting.load_classifier(cfg.run_dir, device="cpu", tta="none")
    assert classifier.decision == calibration.Decision(2.0) and classifier.name == "saved"
    assert classifier.preprocessing.tta == "none" and classifier.preprocessing.eval_size == 40
    batch_norms = [m for m in classifier.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not batch_norms, "folded once when loaded, not again for every prediction"
    plain = predicting.predict_files(classifier, petimages / "Cat")
    ok = plain[plain["error"] == ""]
    assert (ok["predicted"] == np.where(ok["p_Cat"] >= 0.5, "Cat", "Dog")).all(), "most likely"
    assert (ok["confidence"] == ok[["p_Cat", "p_Dog"]].max(axis=1)).all()
    ruled = predicting.load_classifier(cfg.run_dir, device="cpu", tta="none", decision="Cat-99")
    assert ruled.decision == decision
    for table in (
        predicting.predict_files(ruled, petimages / "Cat"),
        predicting.predict_files(classifier, petimages / "Cat", decision=decision),
    ):
        ok = table[table["error"] == ""]
        called_cat = ok["p_Cat"] >= 0.9
        assert (ok.loc[called_cat, "predicted"] == "Cat").all()
        assert (ok.loc[~called_cat, "predicted"] == "Dog").all(), "below the threshold: not Cat"
        assert ok["rule"].str.contains("needed for 99% precision for Cat").all()
        given = np.where(called_cat, ok["p_Cat"], ok["p_Dog"])
        np.testing.assert_allclose(ok["confidence"], given)  # the probability of the answer


def test_files_folders_and_globs_are_found_once_each(tmp_path):
    for name in ("a.jpg", "b.png", "sub/c.JPEG", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    names = [name for _, name in predicting.find_images(tmp_path)]
    assert names == ["a.jpg", "b.png", "sub/c.JPEG"], "relative to the one folder given"
    found = predicting.find_images([str(tmp_path / "*.jpg"), tmp_path / "a.jpg", tmp_path / "sub"])
    assert [path.name for path, _ in found] == ["a.jpg", "c.JPEG"]
    assert predicting.find_images(str(tmp_path / "**" / "*.JPEG"))[0][0].name == "c.JPEG"
    with pytest.raises(FileNotFoundError, match="no file matches"):
        predicting.find_images(str(tmp_path / "*.gif"))


def test_tta_views_and_their_count():
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).view(2, 3, 10, 10)
    for mode, count in evaluation.TTA_VIEWS.items():
        views = evaluation.tta_views(x, 8, mode)
        assert len(views) == count and all(v.shape == (2, 3, 8, 8) for v in views)
    none, flipped = evaluation.tta_views(x, 8, "flip")
    torch.testing.assert_close(none, x[..., 1:9, 1:9])
    torch.testing.assert_close(flipped, x[..., 1:9, 1:9].flip(3))
    corners = evaluation.tta_views(x, 8, "flip_crops")[1:5]
    assert {float(v[0, 0, 0, 0]) for v in corners} == {0.0, 2.0, 20.0, 22.0}
    for size in (8, 7):  # an even and an odd margin: the centre crop as Albumentations'
        every = evaluation.tta_views(x, size, "flip_crops")
        for mode, index in evaluation.FLIP_CROPS_INDEX.items():  # compare_tta's one pass
            for view, at in zip(evaluation.tta_views(x, size, mode), index, strict=True):
                torch.testing.assert_close(view, every[at])
        image = x[0].permute(1, 2, 0).numpy()
        cropped = A.CenterCrop(size, size)(image=image)["image"]
        torch.testing.assert_close(every[0][0], torch.from_numpy(cropped).permute(2, 0, 1))


def test_tta_table_compares_every_mode_on_the_same_images(petimages, monkeypatch):
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    # 47 px to 40: an odd margin, where the centre crop could fall a pixel either way
    cfg = config.make_config(RUN_NAME="tta", IMAGE_SIZE=40, RESIZE_RATIO=1.175, NUM_WORKERS=0)
    assert cfg.cache_size == 47
    split = workflow.ensure_split(cfg, progress=False)
    test_set = workflow.make_datasets(cfg, split, workflow.ensure_cache(cfg, split, progress=False))
    test_set = test_set["test"]
    before = test_set.transform
    model = _random_model()
    table = evaluation.compare_tta(
        model, test_set, transforms.preprocessing_for(cfg), torch.device("cpu")
    )
    assert table["tta"].tolist() == list(config.TTAS) and table["views"].tolist() == [1, 2, 10]
    assert table["accuracy"].between(0, 1).all() and (table["ms_per_image"] > 0).all()
    assert test_set.transform is before, "the caller's dataset is left as it was"
    for row in table.itertuples():  # the one pass gives what predicting with each mode gives
        tta = transforms.preprocessing_for(cfg).with_tta(row.tta)
        probs, labels, _ = evaluation.predict_dataset(model, test_set, tta, torch.device("cpu"))
        assert row.accuracy == pytest.approx(float((probs.argmax(1) == labels).mean()))
        log_loss = -np.log(probs[np.arange(len(labels)), labels]).mean()
        assert row.log_loss == pytest.approx(log_loss, rel=1e-4)


def test_one_photo_is_explained_and_a_rejected_one_says_why(petimages):
    classifier = predicting.Classifier(
        _random_model(), ("Cat", "Dog"), transforms.Preprocessing(52, 48, tta="flip"),
        calibration.Decision(), torch.device("cpu"),
    )  # fmt: skip
    explained = predicting.explain_photo(classifier, petimages / "Dog" / "3.jpg")
    assert len(explained.table) == 1 and explained.table.loc[0, "predicted"] in ("Cat", "Dog")
    assert explained.image.shape == (48, 48, 3) and explained.heat_map.shape == (48, 48)
    assert 0 <= explained.heat_map.min() and explained.heat_map.max() <= 1
    with pytest.raises(ValueError, match="truncated"):
        predicting.explain_photo(classifier, petimages / "Cat" / "truncated.jpg")


def test_an_older_checkpoint_gets_the_preprocessing_its_settings_imply():
    old = {"settings": {"cache_size": 110, "image_size": 96, "recipe": "fast"}}
    assert predicting.preprocessing_of(old) == transforms.Preprocessing(110, 96, tta="flip")
    tutorial = {"settings": {"cache_size": 160, "image_size": 128, "recipe": "tutorial"}}
    assert predicting.preprocessing_of(tutorial).tta == "none"
    with pytest.raises(training.CheckpointError, match="sizes"):
        predicting.preprocessing_of({"settings": {}})
