# The transformer example under `mpirun -np 2 ... --ddp`, once with its AdamW
# and once with --zero (ZeRO-1 over the same AdamW, under the same cosine
# schedule): with the gradients DDP makes equal on every rank, the sharded
# optimizer must give bitwise the same losses step for step.
# CORPUS is any text file (the fortunes package need not be installed).
#   cmake -DMPIEXEC=... -DNP_FLAG=... -DEXAMPLE=... -DCORPUS=... -DWORK_DIR=... -P zero_same_losses.cmake
set(common --ddp --steps 6 --batch 4 --context 32 --d-model 32 --layers 2 --warmup 2
           --sample-chars 0 --quiet --corpus ${CORPUS})
foreach(variant plain zero)
  set(extra)
  if(variant STREQUAL "zero")
    set(extra --zero)
  endif()
  execute_process(COMMAND ${MPIEXEC} ${NP_FLAG} 2 ${EXAMPLE} ${common} ${extra}
                          --metrics ${WORK_DIR}/${variant}.json
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "transformer --ddp ${extra} failed (${rc}):\n${out}")
  endif()
  file(READ ${WORK_DIR}/${variant}.json json_${variant})
  string(JSON losses_${variant} GET "${json_${variant}}" losses)
endforeach()
string(JSON steps LENGTH "${json_plain}" losses)
if(NOT steps EQUAL 6)
  message(FATAL_ERROR "expected 6 losses, got ${steps}: ${losses_plain}")
endif()
if(NOT losses_plain STREQUAL losses_zero)
  message(FATAL_ERROR "--zero changed the losses:\n  AdamW: ${losses_plain}\n  ZeRO:  ${losses_zero}")
endif()
message(STATUS "the same 6 losses with and without --zero: ${losses_plain}")
