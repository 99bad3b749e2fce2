"""Processor inputs: slicing a batch into chunks uses host-side sizes only (it works on the meta device, where no
tensor has values) and trims each chunk to its own longest item, pixels included."""

import torch
from PIL import Image

from pipeline.model.retriever import Retriever
from tests.helpers.qwen_case import model_config


def test_slice_reads_no_device_values_and_trims_to_the_chunk(tiny_qwen2vl_dir):
    processor = Retriever.from_pretrained(tiny_qwen2vl_dir, model_config()).processor
    images = [Image.new("RGB", (w, 112), color) for w, color in ((112, "white"), (224, "red"), (112, "blue"),
                                                               (168, "green"))]
    pages = processor.pages(images)
    queries = processor.queries(["AB", "A longer query text", "XY", "Q"])
    for inputs in (pages, queries):
        for start, stop in ((0, 1), (1, 3), (2, 4), (3, 9)):
            host = inputs.slice(start, stop)
            meta = inputs.to("meta").slice(start, stop)  # any read of a device value would raise here
            for name in ("input_ids", "attention_mask", "vector_index", "vector_mask", "pixel_values"):
                a, b = getattr(host, name), getattr(meta, name)
                assert (a is None) == (b is None) and (a is None or a.shape == b.shape), name
            assert host.input_ids.shape[1] == max(inputs.lengths[start:stop])  # trimmed to the chunk's longest
            assert int(host.attention_mask.sum(1).max()) == host.input_ids.shape[1]
            assert host.vector_index.shape[1] == int(host.vector_mask.sum(1).max())
    chunk = pages.slice(1, 3)  # 224x112 and 112x112 pages: 8x16 and 8x8 patches of 14 px; page 0 had 64
    assert pages.patches[:3] == (64, 128, 64) and chunk.patches == (128, 64)
    assert torch.equal(chunk.pixel_values, pages.pixel_values[64:256])
    assert not torch.equal(chunk.pixel_values, pages.pixel_values[128:320])  # the pages really differ
