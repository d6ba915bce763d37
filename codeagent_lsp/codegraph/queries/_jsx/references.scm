; Shared by javascript and tsx: components used as elements. Lower-case tags are HTML.
; Not a language of its own.

((jsx_opening_element name: (identifier) @reference.call)
  (#match? @reference.call "^[A-Z]"))

((jsx_self_closing_element name: (identifier) @reference.call)
  (#match? @reference.call "^[A-Z]"))

(jsx_opening_element
  name: (member_expression property: (property_identifier) @reference.call))

(jsx_self_closing_element
  name: (member_expression property: (property_identifier) @reference.call))
