"""Analyses in several threads at once: a trace and a build on meta change torch for the
whole process (`archprof.torch_patches`), so they take turns; each thread's figures are
the serial ones, and torch is as it was afterwards."""

import threading

import torch
from torch import nn

import archprof


def _conv_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))


def _in_threads(work, threads: int = 3) -> list:
    """`work()` in each of `threads` threads, started together; the results, or the errors raised."""
    results, start = [], threading.Barrier(threads)

    def run():
        start.wait()
        try:
            results.append(work())
        except Exception as exc:  # the test reports whatever went wrong
            results.append(exc)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return results


def test_threads_analysing_one_module_at_once_each_get_the_serial_figures():
    model = _conv_net()
    serial = archprof.analyze(model, input_size=(3, 32, 32)).totals
    expected = (serial.macs, serial.param_count, serial.peak_activation_bytes)
    routed = (torch.batch_norm, vars(torch.Tensor).get("clone"), torch.nn.init.kaiming_uniform_)

    def analyses():
        return [
            (t.macs, t.param_count, t.peak_activation_bytes)
            for t in (archprof.analyze(model, input_size=(3, 32, 32)).totals for _ in range(5))
        ]

    results = _in_threads(analyses)
    assert results == [[expected] * 5] * 3
    assert (torch.batch_norm, vars(torch.Tensor).get("clone"), torch.nn.init.kaiming_uniform_) == routed
    assert archprof.analyze(model, input_size=(3, 32, 32)).totals.macs == serial.macs


def test_threads_building_and_analysing_built_in_models_at_once_get_the_serial_figures():
    names = ["lenet5", "alexnet", "resnet18"]
    serial = {name: archprof.analyze(name).totals.macs for name in names}
    results = _in_threads(lambda: {name: archprof.analyze(name).totals.macs for name in names})
    assert results == [serial] * 3
