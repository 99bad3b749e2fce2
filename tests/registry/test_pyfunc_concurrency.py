"""The registered pyfunc answers concurrent predicts from their own rows: 8 threads x 400 predicts (60 different
requests in turn: queries, pages and mixed rows) through `mlflow.pyfunc.load_model` equal the one-at-a-time answers
exactly. Negative control: with the retriever's forward lock made a no-op (the encode before the fix) some answers
are wrong or fail."""

import contextlib

import mlflow
import pandas as pd
import pytest

from pipeline.registry.pyfunc import encode_image
from tests.helpers.chain import NAME
from tests.helpers.threaded_calls import differing, distinct_inputs, hammer, repeated


@pytest.fixture(scope="module")
def uri(chain):
    version = chain.registered()["half"]["registered"]["version"]
    mlflow.set_tracking_uri(chain.config().tracking.tracking_uri)
    return f"models:/{NAME}/{version}"


def distinct_frames() -> list[pd.DataFrame]:
    """60 different requests: one query, one page, or a query and a page, over 20 queries and 20 pages."""
    queries, pages = distinct_inputs()
    images = [encode_image(p) for p in pages]
    out = []
    for i in range(60):
        q, img = queries[i % 20], images[(7 * i) % 20]
        rows = [[q, None]] if i % 3 == 0 else [[None, img]] if i % 3 == 1 else [[q, None], [None, img]]
        out.append(pd.DataFrame(rows, columns=["query", "image"]))
    return out


@pytest.fixture(scope="module")
def reference(uri):
    """The loaded pyfunc, 400 requests (the 60 distinct ones in turn) and its one-at-a-time answer to each."""
    model = mlflow.pyfunc.load_model(uri)
    return model, *repeated(distinct_frames(), model.predict, 400)


@pytest.fixture(scope="module")
def frames(reference):
    return reference[1]


def test_eight_threads_predict_like_one_at_a_time(reference, frames):
    model, _, answers = reference
    assert len({str(r[0]["vectors"]) for r in answers}) == 40  # every input has its own answer
    assert differing(hammer(model.predict, frames, threads=8), answers, lambda a, b: a == b) == []


def test_negative_control_unlocked_pyfunc_answers_wrongly(uri, reference, frames):
    model = mlflow.pyfunc.load_model(uri)  # its own copy: the lock goes from this one only
    model.unwrap_python_model().retriever._forward_lock = contextlib.nullcontext()
    bad = []
    for _ in range(3):  # a race: retried so the control itself cannot flake
        bad = differing(hammer(model.predict, frames[:200], threads=8), reference[2][:200], lambda a, b: a == b)
        if bad:
            break
    assert bad, "the unlocked pyfunc answered every concurrent predict correctly: the test could not catch the race"
