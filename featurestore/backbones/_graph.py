"""Backbones whose layers are FX graph nodes plus module names, read with torchvision's ``create_feature_extractor``
(torchvision models as they are, timm models with timm's leaf modules and wrapped functions).

A node whose output a later operation modifies in place (a conv followed by ``ReLU(inplace=True)``, a residual
``out += identity``) would read as the modified tensor, and only when later nodes are extracted with it
(THINGSvision issue 44). Such nodes are flagged in the layer listing and the extractor copies them right after
they are computed, so a layer's features never depend on which other layers were requested.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from featurestore.backbones._base import Backbone, Extractor, LayerInfo, is_batch_output


class _VersionRecorder(fx.Interpreter):
    """Runs a graph, keeping each node's output and its in-place version counter right after it was made."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.made: dict[fx.Node, tuple[torch.Tensor, int]] = {}

    def run_node(self, node: fx.Node) -> object:
        value = super().run_node(node)
        if isinstance(value, torch.Tensor):
            self.made[node] = (value, value._version)
        return value


def _name_to_node(nodes: list[str]) -> dict[str, str]:
    """Each name torchvision accepts as a return node -> the graph node it reads: a node reads itself, a module
    name (``layer1``, ``features``) reads the last node inside that module."""
    resolved = {}
    for node in nodes:  # forward order, so a module's later nodes overwrite its earlier ones
        parts = node.split(".")
        for depth in range(1, len(parts) + 1):
            resolved[".".join(parts[:depth])] = node
    return resolved


@dataclass(eq=False)
class GraphBackbone(Backbone):
    """A model whose layers are its eval-mode FX graph nodes and module names."""

    def _tracer_kwargs(self) -> dict[str, Any] | None:
        """Extra arguments of the FX tracer (leaf modules, functions kept whole); None: torchvision's defaults."""
        return None

    def _graph(self, return_nodes: list[str]) -> fx.GraphModule:
        return create_feature_extractor(
            self.model, return_nodes=return_nodes, tracer_kwargs=self._tracer_kwargs(), suppress_diff_warning=True
        )

    @functools.cached_property
    def _graph_nodes(self) -> list[str]:
        """All eval-mode graph node names, in forward order."""
        return get_graph_node_names(self.model, tracer_kwargs=self._tracer_kwargs(), suppress_diff_warning=True)[1]

    @functools.cached_property
    def _nodes(self) -> dict[str, LayerInfo]:
        """Every graph node with a batch tensor output, probed once with all nodes returned."""
        graph = self._graph(self._graph_nodes)
        recorder = _VersionRecorder(graph)
        with torch.no_grad():  # not inference_mode: that turns off the version counters
            recorder.run(self.probe_input())
        output = next(node for node in graph.graph.nodes if node.op == "output")
        found = {}
        for name, node in output.args[0].items():
            value, version = recorder.made.get(node, (None, 0))
            if node.op != "placeholder" and is_batch_output(value):
                found[name] = LayerInfo(name, inplace=value._version != version, shape=tuple(value.shape[1:]))
        return found

    @functools.cached_property
    def _resolved(self) -> dict[str, str]:
        """Layer name -> graph node, for names whose node has a batch tensor output."""
        return {name: node for name, node in _name_to_node(self._graph_nodes).items() if node in self._nodes}

    def _probe_layers(self) -> list[LayerInfo]:
        order = {node: index for index, node in enumerate(self._nodes)}
        names = sorted(self._resolved, key=lambda name: (order[self._resolved[name]], -name.count(".")))
        return [
            LayerInfo(name, self._nodes[self._resolved[name]].inplace, self._nodes[self._resolved[name]].shape)
            for name in names
        ]

    def _make_extractor(self, layers: list[str]) -> Extractor:
        nodes = list(dict.fromkeys(self._resolved[layer] for layer in layers))
        graph = self._graph(nodes)
        _copy_before_inplace(graph, [node for node in nodes if self._nodes[node].inplace])
        resolved, device = self._resolved, self.device

        def extract(images: torch.Tensor) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                outputs = graph(images.to(device))
            return {layer: outputs[resolved[layer]] for layer in layers}

        return extract


def _copy_before_inplace(graph_module: fx.GraphModule, names: list[str]) -> None:
    """Return a clone of each named output, taken right after it is computed (before any in-place change)."""
    if not names:
        return
    graph = graph_module.graph
    output = next(node for node in graph.nodes if node.op == "output")
    returned = dict(output.args[0])
    for name in names:
        with graph.inserting_after(returned[name]):
            returned[name] = graph.call_method("clone", (returned[name],))
    output.args = (returned,)
    graph_module.recompile()
