; Python references. Capture: @reference.<kind> on the name itself (call, type, attribute).
; Earlier patterns win when two match one node.

(call function: (identifier) @reference.call)
(call function: (attribute attribute: (identifier) @reference.call))

; Base classes.
(class_definition superclasses: (argument_list (identifier) @reference.type))
(class_definition superclasses: (argument_list (attribute attribute: (identifier) @reference.type)))

; Annotations: `x: Shape`, `-> list[Shape]`, `Shape | None`, `geo.Shape`.
(type (identifier) @reference.type)
(type (attribute attribute: (identifier) @reference.type))
(generic_type (identifier) @reference.type)
(type (binary_operator [(identifier) @reference.type (attribute attribute: (identifier) @reference.type)]))

(attribute attribute: (identifier) @reference.attribute)
