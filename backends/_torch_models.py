"""Whole torch models for ``convbench.tune_model`` / ``convbench.use_tuned`` (the torch
backend's ``collect_convs`` / ``wrap_convs``).

Collecting: the model runs once under a ``TorchFunctionMode`` that sees every
``torch.nn.functional.conv*`` / ``conv_transpose*`` call with its real arguments (so padding
modes, ``padding="same"`` and a transposed module's ``output_size`` give the problem actually
computed), and forward hooks on every module that say which module made the call. A call made
directly by an unmodified ``nn.Conv1d/2d/3d`` or ``nn.ConvTranspose1d/2d/3d`` (or a subclass
that keeps their forward) is a rebindable layer; any other -- a subclass with its own forward,
a functional call in some module's forward, an unbatched input, a device or dtype convbench
has no candidate for -- is listed with its reason, never dropped. A module whose name says
convolution but that made no such call (quantized and other custom kernels) is listed too.

Layouts: a 4-D/5-D input in torch's channels-last memory format is a ``channels_last``
problem (handed to candidates as the (N, *spatial, C) view of the same memory); any other
input is ``channels_first``. The model's own call is the torch candidate whose settings
(``TorchBackend.settings``: memory format, mkldnn / cuDNN flags) match what torch does for
that call now: channels-last if the input or the weight is channels-last (torch's rule).

Rebinding: a rebindable module gets an instance ``forward`` that, per input signature (shape,
strides, dtype, device, autograd), resolves once what to run (asking the core's ``bind`` with
the problem, the own call and the real tensors) and afterwards only looks it up: its class's
own forward, or the bound candidate on the (padded, viewed) input and the weight (detached
unless autograd needs it), plus the bias. Calls with extra arguments (``output_size``) always
take the own forward. Hooks on the module still run (only ``forward`` is replaced). The model's
own ``forward`` is routed through ``bind.run_model`` too (the core's whole-model check: which
rebound candidates the model as a whole runs faster with); a model with any submodule in
training mode is not re-run for it.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional

from convbench.models import ModelConv
from convbench.registry import Support

from ._torch_interop import torch_kind, torch_module

#: functional name -> (spatial dims, transposed)
CONV_FUNCTIONS = {"conv1d": (1, False), "conv2d": (2, False), "conv3d": (3, False),
                  "conv_transpose1d": (1, True), "conv_transpose2d": (2, True),
                  "conv_transpose3d": (3, True)}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_TRANSPOSE_ARGS = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups",
                   "dilation")
_MODULES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")

#: own(x, w, device) -> the model's own call's algorithm name, or None
OwnAlgorithm = Callable[[Any, Any, str], Optional[str]]


def model_support(model: Any) -> Support:
    """Whether ``model`` is an eager ``torch.nn.Module`` (never imports torch)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return Support.no("torch is not imported, so this is no torch model")
    if not isinstance(model, torch.nn.Module):
        return Support.no(f"{type(model).__name__} is not a torch.nn.Module")
    if isinstance(model, torch.jit.ScriptModule):
        return Support.no("a TorchScript module (forward hooks and rebinding need the eager "
                          "nn.Module; pass the module before torch.jit.script/trace)")
    if type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
        return Support.no("a torch.compile'd module: pass model._orig_mod (the eager module)")
    return Support.yes()


# ---- what a call computes -------------------------------------------------------------------
def _call_args(name: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    names = _TRANSPOSE_ARGS if CONV_FUNCTIONS[name][1] else _CONV_ARGS
    out = dict(zip(names, args))
    out.update(kwargs)
    return out


def _scalar(v: Any) -> Any:
    """A one-element list/tuple as its element (torch broadcasts it over the dims)."""
    return v[0] if isinstance(v, (list, tuple)) and len(v) == 1 else v


def _same_padding(w: Any, dims: int, dilation: Any) -> tuple:
    """torch's padding="same": total d*(k-1) per dim, the odd element after."""
    dil = (dilation,) * dims if isinstance(dilation, int) else tuple(dilation)
    pairs = []
    for d, k in zip(dil, w.shape[2:]):
        total = d * (int(k) - 1)
        pairs.append((total // 2, total - total // 2))
    return tuple(pairs)


def is_channels_last(t: Any) -> bool:
    """Whether a 4-D/5-D tensor is in torch's channels-last memory format (and not also plain
    contiguous, where both are true)."""
    torch = torch_module()
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())
    return fmt is not None and t.is_contiguous(memory_format=fmt) and not t.is_contiguous()


def spec_of(name: str, args: dict) -> tuple[Any, Optional[str]]:
    """(ConvSpec, None) for the call ``name(**args)``, or (None, why it is not one)."""
    from convbench.dispatch import spec_from_arrays
    from convbench.errors import ConvbenchError

    dims, transposed = CONV_FUNCTIONS[name]
    x, w = args["input"], args["weight"]
    if x.dim() != dims + 2:
        return None, f"unbatched input of shape {tuple(x.shape)} (C, *spatial): not tuned"
    if torch_kind(x) is None:
        return None, f"tensor on device {x.device}: convbench has no candidates there"
    stride, padding, dilation, output_padding = (_scalar(args.get(k, v)) for k, v in (
        ("stride", 1), ("padding", 0), ("dilation", 1), ("output_padding", 0)))
    if isinstance(padding, str):
        padding = 0 if padding == "valid" else _same_padding(w, dims, dilation)
    cl = dims > 1 and is_channels_last(x)
    xv = x.permute(0, *range(2, dims + 2), 1) if cl else x
    try:
        spec = spec_from_arrays(xv, w, stride=stride, padding=padding, dilation=dilation,
                                groups=int(args.get("groups", 1)), transposed=transposed,
                                output_padding=output_padding if transposed else 0,
                                layout="channels_last" if cl else "channels_first")
    except ConvbenchError as exc:
        return None, f"not a convbench problem: {exc}"
    return spec, None


def own_candidate(own: OwnAlgorithm, x: Any, w: Any) -> tuple[Optional[str], Optional[str]]:
    """(the own call's candidate string or None, the input kind)."""
    kind = torch_kind(x)
    device = "cuda" if kind == "torch-cuda" else "cpu"
    algo = own(x, w, device)
    return (f"torch:{algo}@{device}" if algo else None), kind


def rebind_refusal(m: Any) -> Optional[str]:
    """None if ``m`` is a conv module whose forward is nn.ConvNd's own, else why not."""
    nn = torch_module().nn
    for cname in _MODULES:
        base = getattr(nn, cname)
        if isinstance(m, base):
            same = type(m).forward is base.forward and (
                cname.startswith("ConvTranspose") or type(m)._conv_forward is base._conv_forward)
            return None if same else (f"{type(m).__name__} overrides {cname}'s forward: "
                                      f"use_tuned cannot rebind it (not tuned)")
    return f"{type(m).__name__} is not an nn.Conv/ConvTranspose module"


# ---- collecting ----------------------------------------------------------------------------
class _Collector:
    """The TorchFunctionMode and module hooks of one collecting run."""

    def __init__(self, names: dict[int, str], own: OwnAlgorithm) -> None:
        self.names, self.own = names, own
        self.stack: list[list[Any]] = []    # [module, conv calls seen inside it]
        self.rows: dict[tuple, ModelConv] = {}
        self.functions = {getattr(torch_module().nn.functional, n): n for n in CONV_FUNCTIONS}

    def enter(self, m: Any, args: Any) -> None:
        self.stack.append([m, 0])

    def leave(self, m: Any, args: Any, output: Any) -> None:
        while self.stack:
            frame = self.stack.pop()
            if frame[0] is m:
                break
        else:
            return
        if self.stack:
            self.stack[-1][1] += frame[1]
        if frame[1] == 0 and "conv" in type(m).__name__.lower():
            self._add(self._layer(m), type(m).__name__, None, "cpu", None, None,
                      f"{type(m).__name__} made no torch.nn.functional conv call (quantized or "
                      f"custom kernel): not tuned")

    def _layer(self, m: Any) -> str:
        return self.names.get(id(m), f"<{type(m).__name__} outside the model>")

    def _add(self, layer: str, module: str, spec: Any, device: str, own: Optional[str],
             kind: Optional[str], reason: Optional[str]) -> None:
        key = (layer, spec.key if spec is not None else reason)
        row = self.rows.get(key)
        if row is not None:
            row.calls += 1
        else:
            self.rows[key] = ModelConv(layer, module, spec, device, own, kind, reason)

    def record(self, name: str, args: tuple, kwargs: dict) -> None:
        a = _call_args(name, args, kwargs)
        m = self.stack[-1][0] if self.stack else None
        if self.stack:
            self.stack[-1][1] += 1
        spec, reason = spec_of(name, a)
        own, kind = own_candidate(self.own, a["input"], a["weight"]) if spec is not None else (None, None)
        if m is None:
            layer, module = "", f"F.{name}"
            reason = reason or f"F.{name} called outside any module: use_tuned cannot rebind it"
        else:
            layer, module = self._layer(m), type(m).__name__
            refusal = rebind_refusal(m)
            if refusal is not None and reason is None:
                reason = (refusal if "overrides" in refusal else
                          f"F.{name} called in {module}'s forward, not by an nn.Conv module: "
                          f"use_tuned cannot rebind it")
        device = "cuda" if kind == "torch-cuda" else "cpu"
        self._add(layer, module, spec, device, own, kind, reason)


def _mode(collector: _Collector) -> Any:
    from torch.overrides import TorchFunctionMode

    class CollectConvs(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            name = collector.functions.get(func)
            if name is not None:
                collector.record(name, args, kwargs)
            return func(*args, **kwargs)
    return CollectConvs()


def collect(model: Any, inputs: tuple, grad: bool, own: OwnAlgorithm) -> list[ModelConv]:
    """Run ``model(*inputs)`` once; its convolutions, in call order (see the module doc)."""
    from convbench.errors import InvalidInputError

    torch = torch_module()
    names: dict[int, str] = {}
    for name, m in model.named_modules():
        names.setdefault(id(m), name)
    col = _Collector(names, own)
    handles = []
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(col.enter))
            handles.append(m.register_forward_hook(col.leave, always_call=True))
        with (torch.enable_grad() if grad else torch.no_grad()), _mode(col):
            try:
                model(*inputs)
            except Exception as exc:
                raise InvalidInputError(f"example_inputs: model(*example_inputs) raised "
                                        f"{type(exc).__name__}: {exc}") from exc
    finally:
        for h in handles:
            h.remove()
    return list(col.rows.values())


# ---- rebinding -----------------------------------------------------------------------------
def _conv_input(m: Any, x: Any) -> tuple[Any, str, dict[str, Any]]:
    """What nn.ConvNd's forward hands to torch.nn.functional for input ``x`` (padding applied
    for non-zero padding modes): (input, function name, arguments)."""
    F = torch_module().nn.functional
    d = len(m.kernel_size)
    if m.transposed:  # called without output_size: its output_padding is the module's
        return x, f"conv_transpose{d}d", dict(input=x, weight=m.weight, stride=m.stride,
                                              padding=m.padding, output_padding=m.output_padding,
                                              groups=m.groups, dilation=m.dilation)
    padding: Any = m.padding
    if m.padding_mode != "zeros":
        x = F.pad(x, m._reversed_padding_repeated_twice, mode=m.padding_mode)
        padding = 0
    return x, f"conv{d}d", dict(input=x, weight=m.weight, stride=m.stride, padding=padding,
                                dilation=m.dilation, groups=m.groups)


def _tuned_call(m: Any, spec: Any, run: Callable[[Any, Any], Any], grad: bool) -> Callable[[Any], Any]:
    """forward(x) running ``run`` on the (padded, viewed) input and the weight, plus the bias."""
    F = torch_module().nn.functional
    d = spec.dims
    pad = None if m.transposed or m.padding_mode == "zeros" else m._reversed_padding_repeated_twice
    mode = m.padding_mode
    to_last, to_logical = (0, *range(2, d + 2), 1), (0, d + 1, *range(1, d + 1))
    cl = spec.layout == "channels_last"
    bshape = (1, -1) + (1,) * d
    last: list[Any] = [None, None]  # the weight Parameter and its detached view

    def weight() -> Any:
        w = m.weight
        if grad:
            return w
        if w is not last[0]:
            last[0], last[1] = w, w.detach()
        return last[1]

    def call(x: Any) -> Any:
        if pad is not None:
            x = F.pad(x, pad, mode=mode)
        if cl:
            x = x.permute(to_last)
        y = run(x, weight())
        if cl:
            y = y.permute(to_logical)
        b = m.bias
        if b is not None:
            y = y + b.view(bshape) if y.requires_grad else y.add_(b.view(bshape))
        return y
    return call


def _install(layer: str, m: Any, bind: Callable[..., Any], own: OwnAlgorithm) -> None:
    torch = torch_module()
    Tensor, grad_enabled = torch.Tensor, torch.is_grad_enabled
    orig = type(m).forward.__get__(m)
    plans: dict[tuple, tuple[Callable[[Any], Any], Optional[str]]] = {}

    def resolve(x: Any, grad: bool) -> tuple[Callable[[Any], Any], Optional[str]]:
        xin, name, args = _conv_input(m, x)
        spec, _ = spec_of(name, args)
        if spec is None:
            return orig, None
        cand, kind = own_candidate(own, xin, args["weight"])
        d = spec.dims
        xv = xin.permute(0, *range(2, d + 2), 1) if spec.layout == "channels_last" else xin
        w = m.weight if grad else m.weight.detach()
        run = bind(layer, spec, cand, kind, grad, xv, w)
        if run is None:
            return orig, None
        return _tuned_call(m, spec, run, grad), getattr(run, "convbench_candidate", None)

    allows = getattr(bind, "allows", None)

    def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or type(x) is not Tensor:
            return orig(x, *args, **kwargs)
        grad = grad_enabled() and (x.requires_grad or m.weight.requires_grad)
        key = (x.shape, x.stride(), x.dtype, x.device, grad)
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = resolve(x, grad)
        fn, cand = plan
        if cand is not None and allows is not None and not allows(cand):
            return orig(x)       # the whole-model check turned this candidate off
        return fn(x)

    forward.convbench_layer = layer      # type: ignore[attr-defined]
    forward.convbench_plans = plans      # type: ignore[attr-defined]
    m.forward = forward


def wrap(model: Any, bind: Callable[..., Any], inplace: bool, own: OwnAlgorithm) -> Any:
    """``model`` (a deep copy unless ``inplace``) with every rebindable conv module's forward
    replaced (see the module doc)."""
    target = model if inplace else copy.deepcopy(model)
    for layer, m in target.named_modules():
        if rebind_refusal(m) is None:
            _install(layer, m, bind, own)
    if hasattr(bind, "run_model"):
        _install_model_check(target, bind)
    return target


def _signature(v: Any) -> Any:
    """A hashable key of a call's arguments: tensors by shape, strides, dtype, device and
    autograd; containers element-wise; plain scalars by value; anything else by type."""
    torch = torch_module()
    if isinstance(v, torch.Tensor):
        return ("T", tuple(v.shape), v.stride(), str(v.dtype), str(v.device), v.requires_grad)
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(_signature(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple((str(k), _signature(x)) for k, x in v.items()))
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return type(v).__qualname__


def _install_model_check(target: Any, bind: Any) -> None:
    """The model's own forward routed through ``bind.run_model`` (the whole-model check of
    convbench.models.Binder), keyed by the call's signature and whether autograd is on."""
    torch = torch_module()
    inner = target.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        sig = (_signature(args), _signature(kwargs), torch.is_grad_enabled())
        cuda = any(isinstance(a, torch.Tensor) and a.is_cuda for a in args)
        repeatable = not any(m.training for m in target.modules())
        return bind.run_model(sig, lambda: inner(*args, **kwargs), repeatable,
                              torch.cuda.synchronize if cuda else None)

    forward.convbench_model_check = True  # type: ignore[attr-defined]
    target.forward = forward

