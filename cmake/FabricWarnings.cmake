# fabric_set_warnings(target): the project's warning flags, -Werror when FABRIC_WERROR.
function(fabric_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wno-unused-parameter
    # Options structs are meant to be filled partly with designated initializers.
    -Wno-missing-field-initializers)
  if(FABRIC_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

# fabric_use_torch_pch(target): reuse libfabric's precompiled <torch/torch.h>.
function(fabric_use_torch_pch target)
  target_precompile_headers(${target} REUSE_FROM fabric)
endfunction()
