; C++ imports: #include (from C), `using std::string` (module "std", name "string") and
; `using namespace std` (name "*").
; inherits: c

(using_declaration
  (qualified_identifier scope: (_) @import.module name: (identifier) @import.name)) @import

(using_declaration
  (qualified_identifier
    scope: (_) @import.module
    name: (qualified_identifier scope: (_) @import.module name: (identifier) @import.name))) @import

(using_declaration
  "namespace"
  [(identifier) (qualified_identifier) (namespace_identifier)] @import.module
  (#set! import.name "*")) @import
