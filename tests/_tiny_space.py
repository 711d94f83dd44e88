"""A two-conv segmentation space file for the tests of searching with training
(tests/test_search_trained.py, test_report.py, test_dashboard.py): trials take
a fraction of a second on tiny data."""

TINY_SPACE = '''\
"""a two-conv segmentation space for tests"""
import archlab

TASK = "seg"


def make_space(*, num_classes, input_shape):
    def space(trial):
        w = trial.suggest_categorical("width", [4, 8, 16])
        k = trial.suggest_categorical("k", [1, 3])
        b = archlab.GraphBuilder("tiny")
        x = b.relu(b.conv2d(b.input(input_shape), w, k, padding=k // 2))
        b.output(b.conv2d(x, num_classes, 1))
        return b.build()
    return space


space = make_space(num_classes=5, input_shape=(3, 32, 32))
'''
