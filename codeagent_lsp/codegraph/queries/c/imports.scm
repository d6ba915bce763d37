; C #include: the module is the path without quotes or angle brackets (C++ inherits this).

(preproc_include path: (_) @import.module) @import
