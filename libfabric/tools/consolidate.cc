// fabric-consolidate FOLDER FILE: what `fabricd consolidate` runs (fabricd itself does not
// link LibTorch). Turns an fsdp sharded checkpoint folder into one file torch.load opens.
#include <exception>
#include <iostream>
#include <string>

#include "fabric/strategies.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: fabric-consolidate FOLDER FILE\n"
                 "  FOLDER: a sharded checkpoint an fsdp run saved (state_dict_type=\"sharded\")\n"
                 "  FILE:   where to write it as one full checkpoint (as ddp's, read by torch.load)\n";
    return 2;
  }
  try {
    fabric::consolidate_sharded_checkpoint(argv[1], argv[2]);
  } catch (const std::exception& error) {  // fabric's errors, and LibTorch's on a malformed index
    std::cerr << "fabric-consolidate: " << error.what() << std::endl;
    return 1;
  }
  std::cout << "wrote " << argv[2] << std::endl;
  return 0;
}
