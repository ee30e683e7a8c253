#include "layers/sequential.h"

namespace kasmina::nn {

Sequential::Sequential(std::initializer_list<std::shared_ptr<Module>> modules) {
    for (const auto& module : modules) push_back(module);
}

void Sequential::push_back(std::shared_ptr<Module> module) { register_module(std::to_string(size()), std::move(module)); }

std::shared_ptr<Module> Sequential::operator[](size_t index) const {
    if (index >= size()) raise<ShapeError>("Sequential", "index ", index, " out of range for ", size(), " modules");
    return named_children()[index].second;
}

Tensor Sequential::forward(const Tensor& input) {
    Tensor x = input;
    for (const auto& [name, module] : named_children()) x = module->forward(x);
    return x;
}

}  // namespace kasmina::nn
