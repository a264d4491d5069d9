"""Names vulture reports as unused in src/ that are not dead code (`make lint` runs vulture on src/ and this file).

vulture only reads this file: a name or ``_.attribute`` written here counts as used.  Each
entry says why it is not dead.  Generate candidates with
``vulture src --min-confidence 60 --make-whitelist``; add only true false positives.
"""

# ruff: noqa: B018, F821

# Public API read by users (and tests), never by torchsurgeon itself.
_.shape_fallbacks  # ModelReport property: nodes whose shape came from meta execution (README, CHANGELOG)
_.matmul_flops  # FlopSummary field
_.norm_flops  # FlopSummary field
_.hits  # ShapeMemo counter: cache hits of paramcount_sweep
_.status_of  # SurgeryReport method
_.specialised  # Traced field: the forward arguments fixed while tracing
_.ALWAYS  # CrossCheckMode member, passed as crosscheck="always"
_.to_bool  # torch.fx.Tracer override: Python's bool() of a proxy, answered from its value on meta
_.proxy_buffer_attributes  # torch.fx.Tracer option: buffers read in forward become get_attr nodes
_.shape_specific  # Traced field: Python questions about shapes answered for the example inputs
_._alive  # readers._FollowInput: keeps tensors computed from parameters alive so their ids stay unique
_.__class__  # surgery._adapt_layer: a parametrized copy gets a class of its own before its parametrization is removed
_.create_arg  # torch.fx.Tracer override: numpy values computed from known sizes are recorded as Python values
_.buffer_names  # NodeRecord field: the buffers a graph node uses (the graph schema, read by users)
_.module_stack  # torch.fx.Tracer attribute, replaced by frontend.ModuleStack: fx copies it for every node

# Called by Jupyter / IPython, never by torchsurgeon itself.
_._repr_html_  # ModelReport, SurgeryReport: the coloured table a notebook shows
_._repr_pretty_  # ModelReport, SurgeryReport: IPython's plain-text view (the table, not the dataclass repr)

# Called by enum.Enum, never by torchsurgeon itself.
_._missing_  # TableColumn: torchinfo's column names (num_params, mult_adds...) as aliases
_.max_batch  # MemoryPlan method: the largest batch that fits a memory budget (README, CLI)

# Assigned for networkx, which reads it: a graph's adjacency (graph.graph_copy).
_._adj

# Read by transformers, never by torchsurgeon itself: a config's class names (heads.replace_head keeps them in step).
_.label2id
_.use_nested_tensor  # shapes._module_call: torch's TransformerEncoder reads it

# Read by Python's isinstance/issubclass on a class's metaclass, never called by name (frontend._TracedInfo).
_.__instancecheck__
_.__subclasscheck__

# Read by torch.fx's Tracer, which wraps the functions whose ids it holds (trace._SurgeonTracer takes classes out).
_._autowrap_function_ids

# Read by open_clip.model.resize_pos_embed (ownresize._open_clip_vit sets it on a meta copy of the tower).
_.grid_size

# Read by inspect.unwrap (wrappers.instance_forward: the function whose arguments a wrapper set as forward takes).
_.__wrapped__
