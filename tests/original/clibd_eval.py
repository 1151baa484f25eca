# The published CLIBD's evaluation functions, copied verbatim for tests/test_original_metrics.py,
# which runs them beside clibd's own evaluation on the same embeddings.
#
# Source: github.com/bioscan-ml/clibd, commit 7d73f80, bioscanclip/util/util.py, lines 25-40
# (LEVELS and the feature-type lists), 56-75 (Table) and 379-742 (top_k_micro_accuracy,
# print_micro_and_macro_acc, make_prediction, top_k_macro_accuracy, inference_and_print_result,
# get_features_and_label), and scripts/train_cl.py lines 124-143 (compute_overall_acc: the score that
# picks best.pth). Nothing in those lines is changed (not even the `sys.exit` of
# make_prediction, whose module never imports sys); only the imports they use are kept, and the one
# function util.py imports from bioscanclip/epoch/inference_epoch.py (the model's forward over a
# dataloader) is replaced by the stand-in below. The whole folder is excluded from ruff
# (pyproject.toml) so that it stays byte-for-byte the original.
#
# Licence of the original (its LICENSE file):
#
# MIT License
#
# Copyright (c) 2024 3dlg-hcvc
#
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to deal
# in the Software without restriction, including without limitation the rights
# to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
# copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in all
# copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
# SOFTWARE.

import numpy as np
import json
import faiss
from sklearn.preprocessing import normalize
import os
import csv
from omegaconf import DictConfig, OmegaConf


# Stand-in for bioscanclip.epoch.inference_epoch.get_feature_and_label: the "dataloader" the test passes
# is already what that function returns (file names, image / DNA / text features as float64 arrays made
# from .tolist() of the L2-normalised model outputs, and the label dicts).
def get_feature_and_label(dataloader, model, device, multi_gpu=False, for_open_clip=False):
    return dataloader


# ---- bioscanclip/util/util.py lines 25-40 ----
LEVELS = ["order", "family", "genus", "species"]
All_TYPE_OF_FEATURES_OF_QUERY = [
    "encoded_image_feature",
    "encoded_dna_feature",
    "encoded_language_feature",
    "averaged_feature",
    "concatenated_feature",
]
All_TYPE_OF_FEATURES_OF_KEY = [
    "encoded_image_feature",
    "encoded_dna_feature",
    "encoded_language_feature",
    "averaged_feature",
    "concatenated_feature",
    "all_key_features",
]


# ---- bioscanclip/util/util.py lines 56-75 ----
class Table:
    def __init__(self, headers, data):
        self.headers = headers
        self.data = data
        self.column_widths = [max(len(str(item)) for item in column) for column in zip(headers, *data)]

    def print_table(self):
        self.print_row(self.headers)
        self.print_separator()
        for row in self.data:
            self.print_row(row)

    def print_row(self, row):
        formatted_row = "|".join(f"{str(item):^{width}}" for item, width in zip(row, self.column_widths))
        print(f"|{formatted_row}|")

    def print_separator(self):
        separator = "+".join("-" * (width + 2) for width in self.column_widths)
        print(f"+{separator}+")



# ---- bioscanclip/util/util.py lines 379-742 ----
def top_k_micro_accuracy(pred_list, gt_list, k_list=None):
    total_samples = len(pred_list)
    k_micro_acc = {}
    for k in k_list:
        if k not in k_micro_acc.keys():
            k_micro_acc[k] = {}
        for level in LEVELS:
            correct_in_curr_level = 0
            for pred_dict, gt_dict in zip(pred_list, gt_list):

                pred_labels = pred_dict[level][:k]
                gt_label = gt_dict[level]
                if gt_label in pred_labels:
                    correct_in_curr_level += 1
            k_micro_acc[k][level] = correct_in_curr_level * 1.0 / total_samples

    return k_micro_acc

def print_micro_and_macro_acc(acc_dict, k_list, args):
    header = [
        " ",
        "Seen Order",
        "Seen Family",
        "Seen Genus",
        "Seen Species",
        "Unseen Order",
        "Unseen Family",
        "Unseen Genus",
        "Unseen Species",
    ]

    # read modalities from config
    # TODO: fit complicated strategey after updateing the config
    model_config = args.model_config
    if hasattr(args.model_config, "load_ckpt") and args.model_config.load_ckpt is False:
        alignment = "None"
    else:
        alignment = "I"
        if hasattr(model_config, "dna"):
            alignment += ",D"
        if hasattr(model_config, "language"):
            alignment += ",T"

    suffix = f"({alignment})"

    rows = []
    csv_data_dict = {'encoded_image_feature': 'Image',
                     'encoded_dna_feature': 'DNA',
                     'encoded_language_feature': 'Text',
                     'averaged_feature': 'Ave' + suffix,
                     'concatenated_feature': 'Concat' + suffix,
                     'all_key_features': 'All' + suffix}
    csv_data = [["learning_strategy", "Alignment", "DNA_encoder", "Image_encoder", "Language_encoder", "Epoch",
                 "Latent_space_dim", "Query", "Key", "Metric", "Seen_Order", "Seen_Family", "Seen_Genus",
                 "Seen_Species", "Unseen_Order", "Unseen_Family", "Unseen_Genus", "Unseen_Species"]]

    def read_encoder(model_config, key):
        if hasattr(model_config, key):
            if hasattr(model_config[key], "model"):
                return model_config[key].model
            elif hasattr(model_config[key], "pre_train_model"):
                return model_config[key].pre_train_model
        else:
            return "None"
        
    learning_strategy = "FineTuning" if hasattr(model_config, "disable_lora") and model_config.disable_lora else "LoRA"
    
    row_for_csv_data = [learning_strategy, alignment]
    row_for_csv_data.append(read_encoder(model_config, "dna"))
    row_for_csv_data.append(read_encoder(model_config, "image"))
    row_for_csv_data.append(read_encoder(model_config, "language"))
    row_for_csv_data.append(model_config.epochs)
    row_for_csv_data.append(model_config.output_dim)

    rows_for_copy_to_google_doc = []
    for query_feature_type in All_TYPE_OF_FEATURES_OF_QUERY:
        if query_feature_type not in acc_dict.keys():
            continue
        for key_feature_type in All_TYPE_OF_FEATURES_OF_KEY:
            if key_feature_type not in acc_dict[query_feature_type].keys():
                continue
            for type_of_acc in ["micro_acc", "macro_acc"]:
                for k in k_list:
                    if len(list(acc_dict[query_feature_type][key_feature_type].keys())) == 0:
                        continue
                    curr_row = [
                        f"Query_feature: {query_feature_type}||Key_feature: {key_feature_type}||{type_of_acc} top-{k}"
                    ]
                    row_for_copy_to_google_doc = ""

                    row_for_csv = row_for_csv_data.copy()
                    row_for_csv += \
                        [csv_data_dict[query_feature_type], csv_data_dict[key_feature_type],
                         type_of_acc.replace('m', 'M').replace("_", f"_Top-{k}_")]

                    for spit in ["seen", "unseen"]:
                        for level in LEVELS:
                            num = round(acc_dict[query_feature_type][key_feature_type][spit][type_of_acc][k][level], 4)

                            curr_row.append(f"\t{num}")
                            row_for_copy_to_google_doc = (
                                    row_for_copy_to_google_doc + f"{num}\t"
                            )
                            row_for_csv.append(num)
                    rows.append(curr_row)
                    rows_for_copy_to_google_doc.append(row_for_copy_to_google_doc)
                    csv_data.append(row_for_csv)
    table = Table(header, rows)
    table.print_table()

    print("For copy to google doc")
    for row in rows_for_copy_to_google_doc:
        print(row)

    if args.save_inference:
        logs_folder = os.path.join("logs")
        os.makedirs(logs_folder, exist_ok=True)

        # write accurate to json
        with open(os.path.join(logs_folder, "accuracy.json"), 'w') as fp:
            json.dump(acc_dict, fp)
        print(f"Accuracy dict saved to logs folder: {logs_folder}/accuracy.json")

        # write results to csv
        with open(os.path.join(logs_folder, "results.csv"), 'w', newline='') as csvfile:
            csvwriter = csv.writer(csvfile, delimiter=',')
            csvwriter.writerows(csv_data)
        print(f"CSV results saved to logs folder: {logs_folder}/results.csv")

        raw_csv_data = []
        for row in csv_data[1:]:
            raw_csv_data.append(row[-8:])

        with open(os.path.join(logs_folder, "raw.csv"), 'w', newline='') as csvfile:
            csvwriter = csv.writer(csvfile, delimiter=',')
            csvwriter.writerows(raw_csv_data)
        print(f"raw results saved to logs folder: {logs_folder}/raw.csv")

        # write config to json
        OmegaConf.save(args, os.path.join(logs_folder, 'config.yaml'))
        print(f"Config saved to logs folder: {logs_folder}/config.json")

def make_prediction(query_feature, keys_feature, keys_label, with_similarity=False, with_indices=False, max_k=5):
    index = faiss.IndexFlatIP(keys_feature.shape[-1])
    keys_feature = normalize(keys_feature, norm="l2", axis=1).astype(np.float32)
    query_feature = normalize(query_feature, norm="l2", axis=1).astype(np.float32)
    index.add(keys_feature)
    pred_list = []

    similarities, indices = index.search(query_feature, max_k)
    for key_indices in indices:
        k_pred_in_diff_level = {}
        for level in LEVELS:
            if level not in k_pred_in_diff_level.keys():
                k_pred_in_diff_level[level] = []
            for i in key_indices:
                try:
                    k_pred_in_diff_level[level].append(keys_label[i][level])
                except (KeyError, IndexError, TypeError) as e:
                    print(keys_label)
                    print(f"Error appending predicted label at level '{level}': {e}")
                    sys.exit(1)
        pred_list.append(k_pred_in_diff_level)

    out = [pred_list]

    if with_similarity:
        out.append(similarities)

    if with_indices:
        out.append(indices)

    if len(out) == 1:
        return out[0]
    return out

def top_k_macro_accuracy(pred_list, gt_list, k_list=None):
    if k_list is None:
        k_list = [1, 3, 5]

    macro_acc_dict = {}
    per_class_acc = {}
    pred_counts = {}
    gt_counts = {}

    for k in k_list:
        macro_acc_dict[k] = {}
        per_class_acc[k] = {}
        pred_counts[k] = {}
        gt_counts[k] = {}
        for level in LEVELS:
            pred_counts[k][level] = {}
            gt_counts[k][level] = {}
            for pred, gt in zip(pred_list, gt_list):

                pred_labels = pred[level][:k]
                gt_label = gt[level]
                if gt_label not in pred_counts[k][level].keys():
                    pred_counts[k][level][gt_label] = 0
                if gt_label not in gt_counts[k][level].keys():
                    gt_counts[k][level][gt_label] = 0

                if gt_label in pred_labels:
                    pred_counts[k][level][gt_label] = pred_counts[k][level][gt_label] + 1
                gt_counts[k][level][gt_label] = gt_counts[k][level][gt_label] + 1

    for k in k_list:
        for level in LEVELS:
            sum_in_this_level = 0
            list_of_labels = list(gt_counts[k][level].keys())
            per_class_acc[k][level] = {}
            for gt_label in list_of_labels:
                sum_in_this_level = (
                    sum_in_this_level + pred_counts[k][level][gt_label] * 1.0 / gt_counts[k][level][gt_label]
                )
                per_class_acc[k][level][gt_label] = (
                    pred_counts[k][level][gt_label] * 1.0 / gt_counts[k][level][gt_label]
                )
            macro_acc_dict[k][level] = sum_in_this_level / len(list_of_labels)

    return macro_acc_dict, per_class_acc

def inference_and_print_result(keys_dict, seen_dict, unseen_dict, args, small_species_list=None, k_list=None):
    acc_dict = {}
    per_class_acc = {}
    if k_list is None:
        k_list = [1, 3, 5]

    max_k = k_list[-1]

    seen_gt_label = seen_dict["label_list"]
    unseen_gt_label = unseen_dict["label_list"]
    keys_label = keys_dict["label_list"]

    try:
        # Try to build pred_dict from the "processed_id_list" keys
        pred_dict = {
            "seen_id": seen_dict["processed_id_list"],
            "seen_gt_label": seen_gt_label,
            "unseen_id": unseen_dict["processed_id_list"],
            "unseen_gt_label": unseen_gt_label,
        }
    except KeyError as e:
        # Fallback if "processed_id_list" is missing in either dict
        # Use .get() to avoid another KeyError; default to empty list if even file_name_list is missing
        pred_dict = {
            "seen_id": seen_dict.get("file_name_list", []),
            "seen_gt_label": seen_gt_label,
            "unseen_id": unseen_dict.get("file_name_list", []),
            "unseen_gt_label": unseen_gt_label,
        }

    for query_feature_type in All_TYPE_OF_FEATURES_OF_QUERY:
        if query_feature_type not in seen_dict.keys():
            continue
        acc_dict[query_feature_type] = {}
        per_class_acc[query_feature_type] = {}
        pred_dict[query_feature_type] = {}

        for key_feature_type in All_TYPE_OF_FEATURES_OF_KEY:
            if key_feature_type not in keys_dict.keys():
                continue
            acc_dict[query_feature_type][key_feature_type] = {}
            per_class_acc[query_feature_type][key_feature_type] = {}
            pred_dict[query_feature_type][key_feature_type] = {}

            curr_seen_feature = seen_dict[query_feature_type]
            curr_unseen_feature = unseen_dict[query_feature_type]

            curr_keys_feature = keys_dict[key_feature_type]
            if curr_keys_feature is None:
                continue
            if key_feature_type == "all_key_features":
                keys_label = keys_dict["all_key_features_label"]

            if (
                curr_keys_feature is None
                or curr_seen_feature is None
                or curr_unseen_feature is None
                or curr_keys_feature.shape[-1] != curr_seen_feature.shape[-1]
                or curr_keys_feature.shape[-1] != curr_unseen_feature.shape[-1]
            ):
                continue

            curr_seen_pred_list = make_prediction(
                curr_seen_feature, curr_keys_feature, keys_label, with_similarity=False, max_k=max_k
            )
            curr_unseen_pred_list = make_prediction(
                curr_unseen_feature, curr_keys_feature, keys_label, max_k=max_k
            )

            pred_dict[query_feature_type][key_feature_type] = {
                "curr_seen_pred_list": curr_seen_pred_list,
                "curr_unseen_pred_list": curr_unseen_pred_list,
            }

            acc_dict[query_feature_type][key_feature_type]["seen"] = {}
            acc_dict[query_feature_type][key_feature_type]["unseen"] = {}
            acc_dict[query_feature_type][key_feature_type]["seen"]["micro_acc"] = top_k_micro_accuracy(
                curr_seen_pred_list, seen_gt_label, k_list=k_list
            )
            acc_dict[query_feature_type][key_feature_type]["unseen"]["micro_acc"] = top_k_micro_accuracy(
                curr_unseen_pred_list, unseen_gt_label, k_list=k_list
            )

            seen_macro_acc, seen_per_class_acc = top_k_macro_accuracy(
                curr_seen_pred_list, seen_gt_label, k_list=k_list
            )

            unseen_macro_acc, unseen_per_class_acc = top_k_macro_accuracy(
                curr_unseen_pred_list, unseen_gt_label, k_list=k_list
            )

            per_class_acc[query_feature_type][key_feature_type]["seen"] = seen_per_class_acc
            per_class_acc[query_feature_type][key_feature_type]["unseen"] = unseen_per_class_acc

            acc_dict[query_feature_type][key_feature_type]["seen"]["macro_acc"] = seen_macro_acc
            acc_dict[query_feature_type][key_feature_type]["unseen"]["macro_acc"] = unseen_macro_acc

    print_micro_and_macro_acc(acc_dict, k_list, args)

    return acc_dict, per_class_acc, pred_dict

def get_features_and_label(dataloader, model, device, for_key_set=False, for_open_clip=False):
    model.eval()
    file_name_list, encoded_image_feature, encoded_dna_feature, encoded_language_feature, label_list = get_feature_and_label(
        dataloader, model, device, multi_gpu=False, for_open_clip=for_open_clip
    )
    averaged_feature = None
    concatenated_feature = None
    all_key_features = None
    all_key_features_label = None
    if encoded_dna_feature is not None and encoded_image_feature is not None:
        averaged_feature = np.mean([encoded_image_feature, encoded_dna_feature], axis=0)
        concatenated_feature = np.concatenate((encoded_image_feature, encoded_dna_feature), axis=1)

    dictionary_of_split = {
        "file_name_list": file_name_list,
        "encoded_dna_feature": encoded_dna_feature,
        "encoded_image_feature": encoded_image_feature,
        "encoded_language_feature": encoded_language_feature,
        "averaged_feature": averaged_feature,
        "concatenated_feature": concatenated_feature,
        "label_list": label_list,
    }

    if (
        for_key_set
        and encoded_image_feature is not None
        and encoded_dna_feature is not None
        and encoded_language_feature is not None
    ):
        for curr_feature in [encoded_image_feature, encoded_dna_feature, encoded_language_feature]:
            if all_key_features is None:
                all_key_features = curr_feature
                all_key_features_label = label_list
            else:
                all_key_features = np.concatenate((all_key_features, curr_feature), axis=0)
                all_key_features_label = all_key_features_label + label_list

    dictionary_of_split["all_key_features"] = all_key_features
    dictionary_of_split["all_key_features_label"] = all_key_features_label

    return dictionary_of_split


# ---- scripts/train_cl.py lines 124-143 ----
def compute_overall_acc(acc_dict):
    overall_acc_list = []

    for query_type in acc_dict.keys():
        for key_type in acc_dict[query_type].keys():
            for seen_or_unseen in acc_dict[query_type][key_type].keys():
                for micro_and_macro in acc_dict[query_type][key_type][seen_or_unseen].keys():
                    for k in acc_dict[query_type][key_type][seen_or_unseen][micro_and_macro].keys():
                        if k == 3 or k == 5:
                            # Only care about top 1 accuracy
                            continue
                        for level in acc_dict[query_type][key_type][seen_or_unseen][micro_and_macro][k].keys():
                            try:
                                curr_acc = acc_dict[query_type][key_type][seen_or_unseen][micro_and_macro][k][level]
                                overall_acc_list.append(curr_acc)
                            except (KeyError, TypeError) as e:
                                # Skip if key missing or value is not subscriptable
                                continue
    overall_acc = sum(overall_acc_list) / len(overall_acc_list)
    return overall_acc
