"""tools/model_converters/clip2mmseg.py: files that are not CLIP weights say what they are."""
import argparse

import pytest
import torch


@pytest.fixture(scope='module')
def tool(load_script):
    return load_script('tools/model_converters/clip2mmseg.py')


def test_an_html_page_is_named_as_a_failed_download(tool, tmp_path):
    src = tmp_path / 'ViT-B-16.pt'
    src.write_text('<!doctype html>\n<html><head><title>Sign in</title></head></html>\n')
    with pytest.raises(ValueError, match=r'ViT-B-16\.pt: is an HTML page, not a checkpoint: the '
                       'download probably failed'):
        tool.convert(str(src), str(tmp_path / 'out.pth'))
    assert not (tmp_path / 'out.pth').exists()


@pytest.mark.parametrize('zipped', [True, False])
def test_python_objects_are_named_in_the_message(tool, tmp_path, zipped):
    src = tmp_path / 'weights.pt'
    torch.save({'state_dict': {'visual.proj': torch.zeros(1)}, 'args': argparse.Namespace(a=1)},
               src, _use_new_zipfile_serialization=zipped)  # False: the legacy format
    with pytest.raises(ValueError, match=r'weights\.pt: holds Python objects besides tensors '
                       r'\(argparse\.Namespace\), which are not unpickled') as error:
        tool.convert(str(src), str(tmp_path / 'out.pth'))
    assert 'see below' not in str(error.value) and 'publish_model' not in str(error.value)
