# rewrite.cmake (CUDA emulator) — turns one .cu file into host C++ (cmake -DIN=x.cu -DOUT=x.cpp -P):
#   kernel<T><<<grid, block[, smem[, stream]]>>>(args)  ->  vt_emu_launch("kernel<T>", vt_emu_cfg(grid, block...), kernel<T>, args)
#   extern __shared__ T name[];                          ->  T *name = (T *)vt_emu_dyn_smem();
# Everything else is left to the macros of cuda/emu/include/cuda_runtime.h. A #line directive
# keeps compiler messages pointing at the .cu file.
file(READ "${IN}" src)
set(id "[A-Za-z_][A-Za-z_0-9]*(<[^<>;()]*>)?")
string(REGEX REPLACE "(${id})[ \t\r\n]*<<<(([^>]|->)*)>>>[ \t\r\n]*\\([ \t\r\n]*\\)"
       "vt_emu_launch(\"\\1\", vt_emu_cfg(\\3), \\1)" src "${src}")
string(REGEX REPLACE "(${id})[ \t\r\n]*<<<(([^>]|->)*)>>>[ \t\r\n]*\\("
       "vt_emu_launch(\"\\1\", vt_emu_cfg(\\3), \\1, " src "${src}")
string(REGEX REPLACE "extern[ \t]+__shared__[ \t]+([A-Za-z_0-9]+)[ \t]+([A-Za-z_0-9]+)[ \t]*\\[[ \t]*\\][ \t]*;"
       "\\1 *\\2 = (\\1 *)vt_emu_dyn_smem();" src "${src}")
if(src MATCHES "<<<|extern[ \t]+__shared__")
  message(FATAL_ERROR "${IN}: a launch or dynamic shared array the emulator's rewrite does not understand")
endif()
file(WRITE "${OUT}.tmp" "#line 1 \"${IN}\"\n${src}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
